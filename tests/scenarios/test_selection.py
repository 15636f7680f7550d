"""Which test cases a `/retell-test` run sends to Retell (SPEC §3 `<tests>`), end to end.

`<tests>` is ids, `all` (every definition of the engine, all pages) or quoted names matched
case-insensitively; duplicates are dropped and more than the run limit is refused before anything
is created. A mistake here either spends money on the wrong cases or silently runs a subset, and
neither shows up in the parser's unit tests: they never see how Slack delivers the text (HTML
entities, curly quotes), how Retell pages its definitions, or what finally reaches Retell.

So every test here types a Slack-signed slash command at the real bot's `/slack/events` and
asserts on the `/create-batch-test` body the Retell stand-in received (or that none arrived) and
on the exact words the user was shown. The stand-in's `page_cap` makes it answer with shorter
pages than the bot's `limit` asks for, as a real server may, so a bot that reads only the first
page, or assumes a full page means the end, fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.testing.retell import FakeRetell
from bot.testing.slack import BotReply, FakeSlack, Message, SlackUser

from ..helpers import ENGINE, BotFactory, RunningBot, results, top_level, visible_text

LIST_DEFINITIONS = "/v2/list-test-case-definitions"
CREATE = "/create-batch-test"
RESOLVING = "Starting a Retell batch test on `{engine}`, resolving test cases…"
RUN_USAGE = "/retell-test [run] &lt;engine&gt; &lt;tests&gt;"

# The `retell` fixture's engine (ENGINE, llm_abc) has these definitions, in this order.
FIXTURE_CASES = {
    "tc_1": "Case 1",
    "tc_2": "Case 2",
    "tc_3": "Case 3",
    "tc_4": "Case 4",
    "tc_5": "Case 5",
    "tc_fail_1": "Refund request",
    "tc_error_1": "Angry caller",
}

JSONDict = dict[str, Any]

# Typographic characters as people type them and Slack clients insert them; written as escapes
# because ruff flags look-alike characters in source.
DASH = "\u2013"  # en dash
APOS = "\u2019"  # right single quotation mark: Slack's curly apostrophe
REFUND_DE = f"Rückerstattung {DASH} Kündigung 🚀"


# -- helpers -------------------------------------------------------------------------------------


def llm(engine_id: str, version: int | None = None) -> JSONDict:
    body: JSONDict = {"type": "retell-llm", "llm_id": engine_id}
    if version is not None:
        body["version"] = version
    return body


def first_version(message: Message) -> JSONDict:
    """The message as first posted (later edits push earlier versions onto `updates`)."""
    shown = message.updates[0] if message.updates else message
    return {"text": shown.text, "blocks": shown.blocks}


def ack_text(reply: BotReply) -> str:
    """The ack the user sees: Bolt answers a text-only ack as plain text, anything else as JSON."""
    assert reply.status == 200
    if reply.headers.get("Content-Type", "").startswith("application/json"):
        return str(reply.json()["text"])
    return reply.text


def definition_listings(retell: FakeRetell) -> list[dict[str, str]]:
    """The query of every list-test-case-definitions call the bot made, in order."""
    return [r.query for r in retell.requests if r.path == LIST_DEFINITIONS]


async def run_batch(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser, text: str
) -> JSONDict:
    """Type `/retell-test <text>`, wait for the status message, return what Retell was sent.

    A refusal (in the ack or by response_url) fails at once with its text, not by a timeout.
    """
    reply = await user.command(bot.events_url, text)
    ack = ack_text(reply)
    assert ack.startswith("Starting a Retell batch test"), f"refused in the ack: {ack}"
    await slack.wait_for(lambda: bool(top_level(slack) or slack.responses_to(reply.response_url)))
    told = [answer["text"] for answer in slack.responses_to(reply.response_url)]
    assert not told, f"refused after the ack: {told}"
    [create] = [r for r in retell.requests if r.path == CREATE]
    assert create.status == 201, create
    assert isinstance(create.body, dict)
    return create.body


async def refusal(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser, text: str
) -> JSONDict:
    """Type `/retell-test <text>`, expect the "Starting…" ack, then a private refusal.

    Returns the refusal's body after checking that nothing reached Retell or the channel.
    """
    reply = await user.command(bot.events_url, text)
    assert ack_text(reply).startswith("Starting a Retell batch test")
    # A wrongly started run posts its status message instead: stop waiting then, too.
    await slack.wait_for(lambda: bool(top_level(slack) or slack.responses_to(reply.response_url)))
    assert retell.count(CREATE) == 0, "nothing may be created for a selection that can't run"
    assert not top_level(slack), "a refused run posts nothing in the channel"
    [answer] = slack.responses_to(reply.response_url)
    assert answer.get("response_type") == "ephemeral"
    assert RUN_USAGE in visible_text(answer), "the refusal shows the usage of `run`"
    return answer


# -- all -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "page_cap", "pages"),
    [(5, 2, 3), (1000, 400, 3)],
    ids=["short-pages", "1000-cases-in-pages-of-400"],
)
async def test_all_runs_every_definition_of_every_page_in_order(
    bot: RunningBot,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    count: int,
    page_cap: int,
    pages: int,
) -> None:
    retell.page_cap = page_cap
    ids = retell.seed("llm_many", count, prefix="many_")

    reply = await user.command(bot.events_url, "llm_many ALL")
    assert ack_text(reply) == RESOLVING.format(engine="llm_many")
    await slack.wait_for(lambda: len(top_level(slack)) == 1)

    [create] = [r.body for r in retell.requests if r.path == CREATE]
    assert create == {"response_engine": llm("llm_many"), "test_case_definition_ids": ids}
    listings = definition_listings(retell)
    assert len(listings) == pages, "every page is read, each once"
    assert all(q["type"] == "retell-llm" and q["llm_id"] == "llm_many" for q in listings)
    assert "pagination_key" not in listings[0]
    assert all(q.get("pagination_key") for q in listings[1:]), "later pages follow the key"
    [status] = top_level(slack)
    assert f"*Test cases*\n{count}" in visible_text(first_version(status))
    await slack.wait_for(lambda: len(results(slack)) == 1)
    assert f"{count} total" in results(slack)[0].text


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "typed"),
    [
        (REFUND_DE, f'"rückerstattung {DASH} KÜNDIGUNG 🚀"'),
        # macOS may send the decomposed form (u + combining diaeresis).
        (REFUND_DE, f'"Ru\u0308ckerstattung {DASH} Ku\u0308ndigung 🚀"'),
        ("日本語のテスト", "“日本語のテスト”"),
        ("Adresse Hauptstraße", '"ADRESSE HAUPTSTRASSE"'),  # ß casefolds to ss
        ('Customer says "cancel"', '“customer says "CANCEL"”'),
        ('Customer says "cancel"', "'Customer says \"cancel\"'"),
        ("O'Brien's refund", f"“o{APOS}brien{APOS}s REFUND”"),  # Slack's curly apostrophes
        ("O'Brien's refund", "\"O'Brien's refund\""),
        ("O'Brien's refund", "'O'Brien's refund'"),
        # Slack escapes &, < and > in the command text.
        ("Billing & refunds <$50>", '"billing &amp; refunds &lt;$50&gt;"'),
        ("Late   delivery", "“late delivery”"),  # spaces collapse
    ],
    ids=[
        "umlauts-dash-emoji",
        "decomposed-umlauts",
        "japanese-curly-quotes",
        "sharp-s",
        "inner-straight-quotes-in-curly-quotes",
        "inner-double-quotes-in-single-quotes",
        "curly-apostrophes",
        "apostrophes-in-double-quotes",
        "apostrophes-in-single-quotes",
        "slack-html-entities",
        "extra-spaces",
    ],
)
async def test_quoted_name_matches_case_insensitively(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser, name: str, typed: str
) -> None:
    retell.add_engine("retell-llm", "llm_names")
    retell.add_definition("llm_names", "nm_other", "Something else")
    retell.add_definition("llm_names", "nm_wanted", name)

    body = await run_batch(bot, slack, retell, user, f"llm_names {typed}")

    assert body == {"response_engine": llm("llm_names"), "test_case_definition_ids": ["nm_wanted"]}


@pytest.mark.parametrize(
    "typed",
    ["“Customer says “cancel””", '"Customer says "cancel""'],
    ids=["smart-punctuation", "straight"],
)
async def test_name_with_inner_quotes_typed_inside_the_same_quotes(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser, typed: str
) -> None:
    retell.add_engine("retell-llm", "llm_names")
    retell.add_definition("llm_names", "nm_cancel", 'Customer says "cancel"')

    body = await run_batch(bot, slack, retell, user, f"llm_names {typed}")

    assert body["test_case_definition_ids"] == ["nm_cancel"]


async def test_names_in_one_command_run_in_the_order_typed(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.add_engine("retell-llm", "llm_names")
    for case_id, name in [
        ("nm_jp", "日本語のテスト"),
        ("nm_de", REFUND_DE),
        ("nm_ob", "O'Brien's refund"),
        ("nm_cs", 'Customer says "cancel"'),
    ]:
        retell.add_definition("llm_names", case_id, name)
    typed = (
        f'“customer says "cancel"” "{REFUND_DE.upper()}" “o{APOS}brien{APOS}s refund” '
        '"日本語のテスト"'
    )

    body = await run_batch(bot, slack, retell, user, f"llm_names {typed}")

    assert body["test_case_definition_ids"] == ["nm_cs", "nm_de", "nm_ob", "nm_jp"]


async def test_name_found_only_on_a_later_page(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.page_cap = 2
    retell.seed("llm_paged", 4, prefix="pg_")  # "Case 1".."Case 4": two full pages
    retell.add_definition("llm_paged", "pg_last", "Transfer to a human")  # page 3

    body = await run_batch(bot, slack, retell, user, 'llm_paged "transfer TO A HUMAN"')

    assert body == {"response_engine": llm("llm_paged"), "test_case_definition_ids": ["pg_last"]}
    assert len(definition_listings(retell)) == 3


async def test_name_shared_by_several_definitions_runs_them_all(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.add_engine("retell-llm", "llm_twins")
    retell.add_definition("llm_twins", "tw_1", "Refund request")
    retell.add_definition("llm_twins", "tw_other", "Something else")
    retell.add_definition("llm_twins", "tw_2", "refund REQUEST")

    body = await run_batch(bot, slack, retell, user, 'llm_twins "Refund request"')

    assert body["test_case_definition_ids"] == ["tw_1", "tw_2"]


# -- ids, names and duplicates -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tests", "expected", "ack"),
    [
        (
            "tc_1 tc_1,tc_1",
            ["tc_1"],
            f"Starting a Retell batch test on `{ENGINE}` with 1 test case…",
        ),
        ('tc_fail_1 "refund REQUEST"', ["tc_fail_1"], RESOLVING.format(engine=ENGINE)),
        ('"Case 2" "CASE 2" “case 2”', ["tc_2"], RESOLVING.format(engine=ENGINE)),
        (
            # Explicit ids come first, in the order typed, then each name's cases.
            'tc_2,tc_2 "refund request" tc_fail_1 "ANGRY CALLER" "Case 2" tc_3 "case 2"',
            ["tc_2", "tc_fail_1", "tc_3", "tc_error_1"],
            RESOLVING.format(engine=ENGINE),
        ),
    ],
    ids=["same-id-thrice", "id-and-its-name", "same-name-thrice", "mixed"],
)
async def test_ids_and_names_mixed_run_each_case_once(
    bot: RunningBot,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    tests: str,
    expected: list[str],
    ack: str,
) -> None:
    reply = await user.command(bot.events_url, f"{ENGINE} {tests}")
    assert ack_text(reply) == ack
    await slack.wait_for(lambda: len(top_level(slack)) == 1)

    [create] = [r.body for r in retell.requests if r.path == CREATE]
    assert create == {"response_engine": llm(ENGINE), "test_case_definition_ids": expected}
    [status] = top_level(slack)
    assert f"*Test cases*\n{len(expected)}" in visible_text(first_version(status))
    if '"' not in tests:
        assert retell.count(LIST_DEFINITIONS) == 0, "ids alone need no listing"


# -- engines -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "version", "expected"),
    [
        ('llm_x@3 "greeting"', 3, ["x_1"]),
        ("llm_x@0 all", 0, ["x_1", "x_2"]),  # 0 is a version, not "no version"
        ("llm_x@2 x_2", 2, ["x_2"]),
    ],
    ids=["name", "all-at-version-0", "id"],
)
async def test_version_pin_is_sent_in_response_engine(
    bot: RunningBot,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    command: str,
    version: int,
    expected: list[str],
) -> None:
    retell.add_engine("retell-llm", "llm_x", versions=4)
    retell.add_definition("llm_x", "x_1", "Greeting")
    retell.add_definition("llm_x", "x_2", "Goodbye")

    body = await run_batch(bot, slack, retell, user, command)

    assert body == {
        "response_engine": llm("llm_x", version),
        "test_case_definition_ids": expected,
    }
    [status] = top_level(slack)
    assert f"llm_x@{version}" in visible_text(first_version(status))


@pytest.mark.parametrize(
    ("tests", "expected"),
    [('"book a TABLE"', ["cf_1"]), ("all", ["cf_1", "cf_2", "cf_3"])],
    ids=["name", "all"],
)
async def test_conversation_flow_engine(
    bot: RunningBot,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    tests: str,
    expected: list[str],
) -> None:
    retell.page_cap = 2
    flow = "conversation_flow_abc"
    retell.add_engine("conversation-flow", flow)
    retell.add_definition(flow, "cf_1", "Book a table")
    retell.add_definition(flow, "cf_2", "Cancel booking")
    retell.add_definition(flow, "cf_3", "Opening hours")
    retell.add_definition(ENGINE, "tc_book", "Book a table")  # another engine's namesake

    body = await run_batch(bot, slack, retell, user, f"{flow} {tests}")

    assert body == {
        "response_engine": {"type": "conversation-flow", "conversation_flow_id": flow},
        "test_case_definition_ids": expected,
    }
    listings = definition_listings(retell)
    assert len(listings) == 2
    for query in listings:
        assert query["type"] == "conversation-flow"
        assert query["conversation_flow_id"] == flow
        assert "llm_id" not in query


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tests", "message"),
    [
        (
            '"Refund requst"',
            "⚠️ No test case named “Refund requst” for this engine; did you mean “Refund request”?",
        ),
        (
            # Entities arrive escaped and are shown escaped once (Slack displays `&`).
            '"billing &amp; refundz"',
            "⚠️ No test case named “billing &amp; refundz” for this engine; "
            "did you mean “Billing &amp; refunds”?",
        ),
        (
            '"Zebra crossing"',
            "⚠️ No test case named “Zebra crossing” for this engine; no close match",
        ),
        (
            # Valid ids and names don't start a partial run when one name is unknown.
            'tc_1 "Refund request" "Refund requst" "Angry callr" "Zebra crossing"',
            "⚠️ 3 test case names were not found for this engine:\n"
            "• “Refund requst”: did you mean “Refund request”?\n"
            "• “Angry callr”: did you mean “Angry caller”?\n"
            "• “Zebra crossing”: no close match",
        ),
    ],
    ids=["one-unknown", "one-unknown-with-entity", "no-close-match", "several-unknown"],
)
async def test_unknown_names_are_named_with_close_matches_and_nothing_runs(
    bot: RunningBot,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    tests: str,
    message: str,
) -> None:
    retell.add_definition(ENGINE, "tc_billing", "Billing & refunds")

    answer = await refusal(bot, slack, retell, user, f"{ENGINE} {tests}")

    assert answer["text"] == message


@pytest.mark.parametrize(
    ("tests", "message"),
    [
        (
            "all",
            "⚠️ That comes to 7 test cases; a run can have at most 5. Split them into several runs.",
        ),
        (
            'tc_1 tc_2 tc_3 "case 4" "Refund request" "angry caller"',
            "⚠️ That comes to 6 test cases; a run can have at most 5. Split them into several runs.",
        ),
    ],
    ids=["all", "ids-and-names"],
)
async def test_more_cases_than_max_cases_per_run_is_refused(
    start_bot: BotFactory,
    slack: FakeSlack,
    retell: FakeRetell,
    user: SlackUser,
    tests: str,
    message: str,
) -> None:
    async with start_bot(max_cases_per_run=5) as bot:
        answer = await refusal(bot, slack, retell, user, f"{ENGINE} {tests}")
    assert answer["text"] == message


async def test_all_beyond_retells_1000_case_limit_is_refused_after_reading_every_page(
    bot: RunningBot, slack: FakeSlack, retell: FakeRetell, user: SlackUser
) -> None:
    retell.page_cap = 400
    retell.seed("llm_huge", 1500, prefix="huge_")

    answer = await refusal(bot, slack, retell, user, "llm_huge all")

    assert answer["text"] == (
        "⚠️ That comes to 1,500 test cases; a run can have at most 1,000. "
        "Split them into several runs."
    )
    assert len(definition_listings(retell)) == 4

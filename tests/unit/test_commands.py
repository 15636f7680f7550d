"""The `/retell-test` parser: every form of SPEC §3, the malformed inputs users really send,
resolution against an engine's definitions, and a property test that `parse` never raises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.commands import (
    MAX_CASES,
    USAGE,
    Command,
    CommandError,
    HelpCommand,
    ReportCommand,
    RunCommand,
    ScheduleAddCommand,
    ScheduleCommand,
    StatusCommand,
    TestSelection,
    WatchCommand,
    needs_definitions,
    parse,
    resolve_tests,
)
from bot.retell import CaseDefinition
from bot.suite import Engine

from ..helpers import COMMAND_TYPES, FRAGMENTS, assert_safe

LLM = Engine("retell-llm", "llm_abc")


def ok(text: str) -> Command:
    result = parse(text)
    assert not isinstance(result, CommandError), result.message
    return result


def run(text: str) -> RunCommand:
    result = ok(text)
    assert isinstance(result, RunCommand)
    return result


def err(text: str) -> CommandError:
    result = parse(text)
    assert isinstance(result, CommandError), result
    assert_safe(result)
    return result


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\u00a0", "help", "HELP", "Help me please"])
def test_help(text: str) -> None:
    assert parse(text) == HelpCommand()


def test_usage_lists_every_form_one_per_line_in_code() -> None:
    lines = USAGE.splitlines()
    assert len(lines) == 9
    assert all(line.startswith("`/retell-test ") and line.endswith("`") for line in lines)
    for form in ("help", "[run]", "compare", "status", "watch", "schedule add", "schedule list"):
        assert any(form in line for line in lines), form
    assert lines[-1].startswith("`/retell-test report")
    gated = [line for line in lines if "[min_pass=0..100]" in line]
    assert [line.split()[1] for line in gated] == ["[run]", "compare", "schedule"]
    assert "[compare]" in gated[2] and "add-report" not in gated[2]
    assert "<" not in USAGE and "&lt;engine&gt;" in USAGE  # placeholders can't become Slack links


# --------------------------------------------------------------------------- run


@pytest.mark.parametrize("prefix", ["", "run ", "RUN ", "Run "])
def test_run_with_or_without_keyword(prefix: str) -> None:
    assert parse(f"{prefix}llm_abc tc_1") == RunCommand(LLM, TestSelection(ids=("tc_1",)))


def test_engine_version_and_conversation_flow() -> None:
    assert run("llm_abc@3 all").engine == Engine("retell-llm", "llm_abc", 3)
    assert run("llm_abc@0 all").engine.version == 0
    flow = run("conversation_flow_a-B_9@12 tc_1").engine
    assert flow == Engine("conversation-flow", "conversation_flow_a-B_9", 12)
    assert flow.response_engine() == {
        "type": "conversation-flow",
        "conversation_flow_id": "conversation_flow_a-B_9",
        "version": 12,
    }


def test_ids_separated_by_commas_and_spaces_deduplicated_in_order() -> None:
    tests = run("llm_abc tc_1,tc_2 tc_3 , tc_2,,tc_1, tc.4,").tests
    assert tests == TestSelection(ids=("tc_1", "tc_2", "tc_3", "tc.4"))


def test_ids_are_case_sensitive_but_names_are_not() -> None:
    tests = run('llm_abc TC_1 tc_1 "Refund request" "refund  REQUEST" "Billing"').tests
    assert tests.ids == ("TC_1", "tc_1")
    assert tests.names == ("Refund request", "Billing")


@pytest.mark.parametrize("word", ["all", "ALL", "All"])
def test_all(word: str) -> None:
    assert run(f"llm_abc {word}").tests == TestSelection(everything=True)


def test_all_repeated_is_still_all() -> None:
    assert run("llm_abc all, all").tests == TestSelection(everything=True)


@pytest.mark.parametrize(
    ("quoted", "name"),
    [
        ('"Refund request"', "Refund request"),
        ("'Refund request'", "Refund request"),
        ("\u201cRefund request\u201d", "Refund request"),  # Slack's smart double quotes
        ("\u2018Refund request\u2019", "Refund request"),  # smart single quotes
        ("\u201dRefund request\u201d", "Refund request"),  # macOS sometimes closes both ways
        ("\u201eRefund request\u201c", "Refund request"),  # German low-high quotes
        ('"  Refund \n request "', "Refund request"),  # whitespace normalised
        ("\u2018Customer\u2019s refund\u2019", "Customer\u2019s refund"),  # apostrophe inside
        ("'Customer's refund'", "Customer's refund"),
        ('"It\'s \u201cfine\u201d"', "It's \u201cfine\u201d"),
    ],
)
def test_quoted_names(quoted: str, name: str) -> None:
    assert run(f"llm_abc {quoted}").tests.names == (name,)


def test_ids_and_names_mixed_keep_their_order() -> None:
    tests = run("llm_abc tc_1,\u201cRefund request\u201d,tc_2 'Billing question' tc_1").tests
    assert tests == TestSelection(
        ids=("tc_1", "tc_2"), names=("Refund request", "Billing question")
    )


def test_names_with_smart_and_straight_apostrophes_are_duplicates() -> None:
    tests = run('llm_abc "Customer\'s refund" \u2018customer\u2019s REFUND\u2019').tests
    assert tests.names == ("Customer's refund",)


def test_quoted_engine_is_accepted() -> None:
    assert run('"llm_abc" tc_1').engine == LLM


# --------------------------------------------------------------------------- Slack escapes


def test_html_entities_are_unescaped_in_names() -> None:
    tests = run('llm_abc "Q&amp;A &lt;urgent&gt;" "q&amp;a  &lt;URGENT&gt;"').tests
    assert tests.names == ("Q&A <urgent>",)


def test_entities_are_unescaped_once() -> None:
    assert run('llm_abc "a &amp;lt; b"').tests.names == ("a &lt; b",)


def test_all_whitespace_counts_as_separator() -> None:
    text = "llm_abc\u00a0tc_1\ntc_2\r\n\ttc_3\u2003tc_4\u200btc_5\x00tc_6"
    assert run(text).tests.ids == ("tc_1", "tc_2", "tc_3", "tc_4", "tc_5", "tc_6")


def test_markup_inside_a_quoted_name_is_kept_as_text() -> None:
    assert run('llm_abc "Ask for <@U1|bob>"').tests.names == ("Ask for <@U1|bob>",)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("llm_abc <@U123|bob>", "user mention"),
        ("llm_abc <@U123>", "user mention"),
        ("llm_abc <#C123|general>", "channel mention"),
        ("llm_abc <!channel>", "special mention"),
        ("llm_abc <!here>", "special mention"),
        ("llm_abc <!subteam^S1|@qa>", "user group mention"),
        ("llm_abc <http://x|x>", "link"),
        ("llm_abc tc_1 <mailto:a@b.c|a@b.c>", "link"),
        ("llm_abc <@U123|bob smith>, tc_1", "user mention"),  # label with a space stays whole
    ],
)
def test_markup_where_a_test_id_is_expected(text: str, kind: str) -> None:
    error = err(text)
    assert f"is a {kind}, not a test case" in error.message
    assert "&lt;" in error.message and "&gt;" in error.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<@U123|bob> tc_1", "is a user mention, not an engine"),
        ("run <#C1|general> tc_1", "is a channel mention, not an engine"),
        ("<!channel>", "is a special mention, not an engine"),
        ("run <https://llm.example.com/ws|llm.example.com> all", "custom LLM"),
        ("<https://llm.example.com/ws> all", "custom LLM"),
        ("run wss://llm.example.com/ws all", "custom LLM"),
    ],
)
def test_markup_where_an_engine_is_expected(text: str, expected: str) -> None:
    assert expected in err(text).message


def test_markup_in_batch_ids() -> None:
    assert "is a channel mention, not a batch id" in err("watch <#C1|general>").message
    assert "is a user mention, not a batch id" in err("status <@U1>").message


def test_unpaired_angle_brackets_do_not_swallow_the_rest() -> None:
    error = err("llm_abc tc_1 <oops tc_2 <@U1|x>")
    assert "`&lt;oops`" in error.message


# --------------------------------------------------------------------------- status, watch, report


def test_status_and_watch() -> None:
    assert parse("status") == StatusCommand(None)
    assert parse("STATUS tcbj_9-X") == StatusCommand("tcbj_9-X")
    assert parse("watch tcbj_1") == WatchCommand("tcbj_1")
    assert parse("Watch  tcbj_1 ") == WatchCommand("tcbj_1")


@pytest.mark.parametrize(("text", "days"), [("report", 7), ("report 1", 1), ("REPORT 365", 365)])
def test_report(text: str, days: int) -> None:
    assert parse(text) == ReportCommand(days)


# --------------------------------------------------------------------------- schedule


def test_schedule_add_minimal() -> None:
    assert parse('schedule add "daily 09:00" llm_abc all') == ScheduleAddCommand(
        "daily 09:00", LLM, TestSelection(everything=True)
    )


def test_schedule_add_with_every_option_and_smart_quotes() -> None:
    command = ok(
        "Schedule ADD \u201c0 9 * * 1,3\u201d conversation_flow_f@2 tc_1, \u2018Refund\u2019 "
        "name=\u201cNightly  regression\u201d notify=FAILURES mention=<@U123ABC|bob smith>"
    )
    assert command == ScheduleAddCommand(
        when="0 9 * * 1,3",
        engine=Engine("conversation-flow", "conversation_flow_f", 2),
        tests=TestSelection(ids=("tc_1",), names=("Refund",)),
        name="Nightly regression",
        options={"notify": "failures", "mention": "<@U123ABC>"},
    )


def test_schedule_add_options_anywhere_after_the_engine() -> None:
    command = ok(
        "schedule add 'weekly mon 08:30' llm_abc notify=changes tc_1 "
        "mention=<!subteam^S0614TZR7|@qa-team> name=nightly tc_2"
    )
    assert isinstance(command, ScheduleAddCommand)
    assert command.tests.ids == ("tc_1", "tc_2")
    assert command.name == "nightly"
    assert dict(command.options) == {"notify": "changes", "mention": "<!subteam^S0614TZR7>"}


def test_schedule_options_are_read_only() -> None:
    command = ok('schedule add "hourly" llm_abc all notify=always')
    assert isinstance(command, ScheduleAddCommand)
    with pytest.raises(TypeError):
        command.options["notify"] = "never"  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("schedule list", ScheduleCommand("list", None)),
        ("SCHEDULE LIST", ScheduleCommand("list", None)),
        ("schedule remove s_1", ScheduleCommand("remove", "s_1")),
        ("schedule pause 42", ScheduleCommand("pause", "42")),
        ("schedule resume s-1", ScheduleCommand("resume", "s-1")),
        ("schedule Run s1", ScheduleCommand("run", "s1")),
    ],
)
def test_schedule_actions(text: str, expected: ScheduleCommand) -> None:
    assert parse(text) == expected


# --------------------------------------------------------------------------- malformed input

MALFORMED: list[tuple[str, list[str], str | None]] = [
    # (input, substrings of the message, topic of the usage line)
    ("frobnicate tc_1", ["`frobnicate` is not a subcommand", "`schedule`", "`report`"], None),
    ("tc_1 tc_2", ["`tc_1` is not a subcommand", "llm_&lt;id&gt;"], None),
    ("agent_123 tc_1", ["`agent_123` is an agent id", "conversation_flow_&lt;id&gt;"], "run"),
    ("run agent_123 tc_1", ["`agent_123` is an agent id"], "run"),
    ("llm_ tc_1", ["`llm_` is missing the id", "llm_&lt;id&gt;"], "run"),
    ("run conversation_flow_ all", ["missing the id after `conversation_flow_`"], "run"),
    ("llm_abc@x tc_1", ["`llm_abc@x` has an invalid version (`x`)", "whole number"], "run"),
    ("llm_abc@-1 tc_1", ["invalid version (`-1`)"], "run"),
    ("llm_abc@ tc_1", ["missing the version after `@`"], "run"),
    ("llm_abc@1.5 tc_1", ["invalid version (`1.5`)"], "run"),
    ("llm_abc@1@2 tc_1", ["invalid version (`1@2`)"], "run"),
    ("LLM_abc tc_1", ["lower-case `llm_`", "`LLM_abc`"], "run"),
    ("run llm_ab!c tc_1", ["`llm_ab!c` is not an engine id"], "run"),
    ("run foo tc_1", ["`foo` is not an engine id", "llm_&lt;id&gt;"], "run"),
    ("run", ["`run` needs an engine and test cases"], "run"),
    ("run llm_abc", ["Name at least one test case"], "run"),
    ("llm_abc", ["Name at least one test case", "`all`", "quoted names"], "run"),
    ("llm_abc ,, ,", ["Name at least one test case"], "run"),
    ("llm_abc all tc_1", ["`all` already runs every test case", "alone"], "run"),
    ('llm_abc "Refund" all', ["`all` already runs every test case"], "run"),
    ('llm_abc "Refund request', ['quote that starts `"Refund request`', "never closed"], "run"),
    ("llm_abc \u201cRefund", ["quote that starts `\u201cRefund`", "never closed"], "run"),
    ('llm_abc ""', ["Empty quotes"], "run"),
    ("llm_abc '   '", ["Empty quotes"], "run"),
    ("llm_abc tc#1", ["`tc#1` is not a test case id", "letters, digits"], "run"),
    ('llm_abc tc_1"Refund"', ['`tc_1"Refund"` is not a test case id', "as a whole"], "run"),
    ("llm_abc @3", ["`@3` is not a test case id", "right after the engine"], "run"),
    ("llm_abc name=nightly", ["`name=` goes with `schedule add`", "`repeat=`"], "run"),
    ("llm_abc tc_1 foo=1", ["`foo=` is not an option", "`repeat=` (2 to 5)"], "run"),
    ("llm_abc tc_1 repeat=6", ["`repeat=` takes a number of runs from 2 to 5", "`6`"], "run"),
    ("llm_abc tc_1 repeat=0", ["from 2 to 5", "`0`"], "run"),
    ("llm_abc tc_1 repeat=two", ["from 2 to 5", "`two`"], "run"),
    ("llm_abc tc_1 repeat=2 repeat=3", ["`repeat=` is given twice"], "run"),
    ("llm_abc all min_pass=95 min_pass=90", ["`min_pass=` is given twice"], "run"),
    ("llm_abc all notify=always", ["goes with `schedule add`", "`min_pass=` (0 to 100)"], "run"),
    ("llm_abc@3 llm_abc@4 all", ["`llm_abc@4` is not a test case id", "`compare llm_abc@3"], "run"),
    ("llm_abc " + "t" * 129, ["129 characters long", "at most 128"], "run"),
    ("llm_abc tc_&lt;b&gt;", ["`tc_&lt;b&gt;` is not a test case id"], "run"),
    ('"Refund" tc_1', ["can't start with a quoted name (\u201cRefund\u201d)"], "run"),
    ("compare", ["`compare` needs an engine version and test cases"], "compare"),
    ("compare llm_abc all", ["needs the version to compare from, e.g. `llm_abc@3`"], "compare"),
    ("compare llm_abc@3 llm_xyz@4 all", ["`llm_abc@3` and `llm_xyz@4` are different"], "compare"),
    ("compare llm_abc@3 conversation_flow_abc@4 all", ["different engines"], "compare"),
    ("compare llm_abc@3 llm_abc@3 all", ["compares a version with itself"], "compare"),
    ("compare llm_abc@3", ["Name at least one test case"], "compare"),
    ("compare llm_abc@3 llm_abc@4 repeat=2", ["Name at least one test case"], "compare"),
    ("compare llm_abc@3 llm_abc@x all", ["`llm_abc@x` has an invalid version"], "compare"),
    ("compare llm_abc@3 LLM_abc@4 all", ["lower-case `llm_`"], "compare"),
    ("compare agent_1@3 all", ["`agent_1@3` is an agent id"], "compare"),
    ("compare llm_abc@3 llm_abc@4 llm_abc@5 all", ["`llm_abc@5` is not a test case"], "compare"),
    ("compare llm_abc@3 all name=x", ["`name=` goes with `schedule add`", "comparison"], "compare"),
    ("compare llm_abc@3 all repeat=9", ["from 2 to 5", "`9`", "on each version"], "compare"),
    ("compare llm_abc@3 all min_pass=2 min_pass=3", ["`min_pass=` is given twice"], "compare"),
    ('compare llm_abc@3 "Refund', ["never closed"], "compare"),
    ("status a b", ["`status` takes at most one batch id", "unexpected `b`"], "status"),
    ("status bad/id", ["`bad/id` is not a batch id"], "status"),
    ("watch", ["`watch` needs the id of the batch"], "watch"),
    ("watch a b", ["`watch` takes one batch id", "unexpected `b`"], "watch"),
    ("watch " + "b" * 129, ["is not a batch id", "at most 128"], "watch"),
    ("report 0", ["1 to 365 days", "got `0`"], "report"),
    ("report 366", ["1 to 365 days", "got `366`"], "report"),
    ("report -3", ["`-3` is not a number of days"], "report"),
    ("report 7d", ["`7d` is not a number of days"], "report"),
    ("report \u0663", ["is not a number of days"], "report"),  # an Arabic-Indic digit
    ("report 1 2", ["`report` takes at most one number of days"], "report"),
    ("report " + "9" * 5000, ["1 to 365 days"], "report"),
    ("schedule", ["`schedule` needs an action", "`add`", "`resume`"], "schedule"),
    ("schedule frob", ["`frob` is not a schedule action"], "schedule"),
    ("schedule list all", ["nothing after `list`", "unexpected `all`"], "schedule"),
    ("schedule remove", ["`schedule remove` needs the schedule's id"], "schedule"),
    ("schedule pause a b", ["one schedule id after `pause`"], "schedule"),
    ("schedule resume <@U1>", ["is not a schedule id"], "schedule"),
    ("schedule add", ["`schedule add` needs a quoted schedule"], "schedule"),
    ("schedule add daily 09:00 llm_abc all", ["Put the schedule in quotes", "`daily`"], "schedule"),
    ('schedule add "" llm_abc all', ["quoted schedule is empty"], "schedule"),
    ('schedule add "hourly"', ["needs an engine after the schedule"], "schedule"),
    ('schedule add "<!here> 9:00" llm_abc all', ["contains a mention or a link"], "schedule"),
    ('schedule add "hourly" agent_1 all', ["`agent_1` is an agent id"], "schedule"),
    ('schedule add "hourly" llm_abc', ["Name at least one test case"], "schedule"),
    ('schedule add "hourly" llm_abc all color=red', ["Unknown option `color=`"], "schedule"),
    ('schedule add "hourly" llm_abc all notify=never', ["`never` is not a `notify=` choice"], None),
    ('schedule add "hourly" llm_abc all notify=', ["`notify=` needs a value"], "schedule"),
    ('schedule add "hourly" llm_abc all name=a name=b', ["`name=` is given twice"], "schedule"),
    ('schedule add "hourly" llm_abc all name="x', ["never closed"], "schedule"),
    ('schedule add "hourly" llm_abc all name=' + "n" * 81, ["81 characters long"], "schedule"),
    ('schedule add "hourly" llm_abc all name=<@U1|x>', ["can't contain mentions"], "schedule"),
    ('schedule add "hourly" llm_abc all mention=@bob', ["`@bob` is not a mention"], "schedule"),
    ('schedule add "hourly" llm_abc all mention=<#C1|x>', ["is not a mention"], "schedule"),
    ('schedule add "hourly" compare', ["needs an engine after `compare`"], "schedule"),
    ('schedule add "hourly" compare llm_abc all', ["needs the version to compare"], "schedule"),
    ('schedule add "hourly" compare llm_abc@3 llm_abc@3 all', ["with itself"], "schedule"),
    ('schedule add "hourly" compare llm_abc@3 llm_b@4 all', ["different engines"], "schedule"),
    ('schedule add "hourly" llm_abc@3 llm_abc@4 all', ["one engine", "compare llm_"], "schedule"),
    ('schedule add "hourly" llm_abc all min_pass=0.9', ["`min_pass=90` for 90%"], "schedule"),
    ('schedule add "hourly" llm_abc all min_pass=', ["`min_pass=` needs a value"], "schedule"),
    ('schedule add "hourly" llm_abc all min_pass=1 min_pass=2', ["is given twice"], "schedule"),
    ('schedule add "hourly" llm_abc all repeat=2', ["Unknown option `repeat=`"], "schedule"),
    ('schedule add-report "daily 09:00" min_pass=95', ["`min_pass=` is for run schedules"], None),
    ('schedule add-report "daily 09:00" 7 min_pass=high', ["`min_pass=` is for run"], "schedule"),
    ('schedule add-report "daily 09:00" notify=never', ["`notify=` is for run schedules"], None),
]


@pytest.mark.parametrize(("text", "expected", "topic"), MALFORMED)
def test_malformed_input_gets_a_specific_message(
    text: str, expected: list[str], topic: str | None
) -> None:
    error = err(text)
    for fragment in expected:
        assert fragment in error.message, (fragment, error.message)
    if topic is not None:
        assert error.topic == topic
        assert error.usage != USAGE and error.usage in USAGE
    assert len(MALFORMED) >= 20


def test_unknown_word_lists_every_subcommand_and_gets_the_whole_usage() -> None:
    error = err("deploy llm_abc")
    for name in ("help", "run", "compare", "status", "watch", "schedule", "report"):
        assert f"`{name}`" in error.message
    assert error.usage == USAGE


def test_schedule_errors_show_both_schedule_usage_lines() -> None:
    usage = err("schedule").usage
    assert "schedule add" in usage and "schedule list" in usage
    assert "schedule add-report" in usage
    assert "/retell-test report" not in usage


def test_echoed_tokens_are_truncated_and_escaped() -> None:
    error = err("run <@U123|" + "x" * 500 + ">")
    assert "x" * 41 not in error.message
    assert "…" in error.message
    error = err("foo&lt;!channel&gt;bar")
    assert "`foo&lt;!channel&gt;bar`" in error.message  # shown literally, never a mention


def test_backticks_in_a_token_cannot_break_out_of_code() -> None:
    error = err("run llm_`<!here>` tc")
    assert error.message.count("`") % 2 == 0


def test_errors_never_echo_much_of_a_long_input() -> None:
    long_word = "z" * 4000
    for text in (long_word, f"llm_abc {long_word}", f"run {long_word}", f'llm_abc "{long_word}'):
        assert "z" * 41 not in err(text).message


# --------------------------------------------------------------------------- case limit


def test_exactly_the_limit_is_fine_and_duplicates_do_not_count() -> None:
    ids = [f"tc_{i}" for i in range(MAX_CASES)]
    assert len(run("llm_abc " + ",".join(ids + ids)).tests.ids) == MAX_CASES


def test_more_than_the_limit_is_an_error_before_anything_else() -> None:
    ids = ",".join(f"tc_{i}" for i in range(MAX_CASES + 1))
    error = err(f"llm_abc {ids}")
    assert "1,001 test cases" in error.message and "at most 1,000" in error.message
    # counted before each id is checked: the count is the useful message for a pasted list
    assert "1,002 test cases" in err(f"llm_abc {ids} bad#id").message


def test_names_count_towards_the_limit() -> None:
    names = " ".join(f'"case {i}"' for i in range(MAX_CASES + 1))
    assert "1,001 test cases" in err(f"llm_abc {names}").message


def test_absurdly_long_input_is_refused_quickly() -> None:
    error = err("llm_abc " + "tc_1 " * 100_000)
    assert "characters long" in error.message


# --------------------------------------------------------------------------- resolution

DEFINITIONS = [
    CaseDefinition("tcd_1", "Refund request"),
    CaseDefinition("tcd_2", "Billing question"),
    CaseDefinition("tcd_3", "refund  REQUEST"),  # same name, other definition
    CaseDefinition("tcd_4", "Customer's refund"),
    CaseDefinition("tcd_5", "Réservation annulée 🎉"),
    CaseDefinition("tcd_6", 'Says "hello" & <waves>'),
]


def test_resolve_ids_only_needs_no_definitions() -> None:
    selection = run("llm_abc tc_9 tc_1").tests
    assert not needs_definitions(selection)
    assert resolve_tests(selection, []) == ("tc_9", "tc_1")


def test_resolve_all() -> None:
    selection = run("llm_abc all").tests
    assert needs_definitions(selection)
    assert resolve_tests(selection, DEFINITIONS) == tuple(f"tcd_{i}" for i in range(1, 7))


def test_resolve_all_without_definitions() -> None:
    error = resolve_tests(TestSelection(everything=True), [])
    assert isinstance(error, CommandError)
    assert "no test case definitions" in error.message


def test_resolve_names_case_insensitively_ids_first() -> None:
    selection = run(
        "llm_abc \u201cREFUND request\u201d tcd_2 \u2018customer\u2019s refund\u2019"
    ).tests
    assert needs_definitions(selection)
    # explicit ids first, then every definition matching each name, de-duplicated
    assert resolve_tests(selection, DEFINITIONS) == ("tcd_2", "tcd_1", "tcd_3", "tcd_4")


def test_resolve_unicode_and_escaped_names() -> None:
    names = run(
        "llm_abc \u201cr\u00e9servation ANNUL\u00c9E \U0001f389\u201d "
        "'Says \"hello\" &amp; &lt;waves&gt;'"
    ).tests
    assert resolve_tests(names, DEFINITIONS) == ("tcd_5", "tcd_6")


def test_resolve_unknown_name_suggests_close_matches() -> None:
    error = resolve_tests(TestSelection(names=("Refund reqest",)), DEFINITIONS)
    assert isinstance(error, CommandError)
    assert_safe(error)
    assert error.message == (
        "No test case named \u201cRefund reqest\u201d for this engine; "
        "did you mean \u201cRefund request\u201d?"
    )


def test_resolve_lists_each_unknown_name() -> None:
    selection = TestSelection(ids=("tc_1",), names=("Refund request", "Biling question", "zzz"))
    error = resolve_tests(selection, DEFINITIONS)
    assert isinstance(error, CommandError)
    assert error.message.splitlines() == [
        "2 test case names were not found for this engine:",
        "\u2022 \u201cBiling question\u201d: did you mean \u201cBilling question\u201d?",
        "\u2022 \u201czzz\u201d: no close match",
    ]


def test_resolve_suggestions_are_escaped_and_at_most_three() -> None:
    defs = [CaseDefinition(f"d{i}", f"Refund <!channel> {i}") for i in range(6)]
    error = resolve_tests(TestSelection(names=("Refund <!channel>",)), defs)
    assert isinstance(error, CommandError)
    assert_safe(error)
    assert error.message.count("Refund &lt;!channel&gt;") == 4  # the name + three suggestions


def test_resolve_many_unknown_names_are_summarised() -> None:
    names = tuple(f"missing {i}" for i in range(50))
    error = resolve_tests(TestSelection(names=names), DEFINITIONS)
    assert isinstance(error, CommandError)
    assert "50 test case names were not found" in error.message
    assert "\u2026and 45 more." in error.message
    assert len(error.message) < 1500


def test_resolve_unknown_names_when_the_engine_has_none() -> None:
    error = resolve_tests(TestSelection(names=("a", "b")), [])
    assert isinstance(error, CommandError)
    assert "\u201ca\u201d, \u201cb\u201d" in error.message
    assert "no test case definitions" in error.message


def test_resolve_limit_applies_after_expansion() -> None:
    defs = [CaseDefinition(f"d{i}", "Same name") for i in range(30)]
    error = resolve_tests(TestSelection(ids=("x",), names=("same name",)), defs, max_cases=30)
    assert isinstance(error, CommandError)
    assert "31 test cases" in error.message and "at most 30" in error.message
    assert resolve_tests(TestSelection(names=("same name",)), defs, max_cases=30) == tuple(
        f"d{i}" for i in range(30)
    )


def test_resolve_explicit_ids_against_the_limit() -> None:
    ids = tuple(f"t{i}" for i in range(11))
    error = resolve_tests(TestSelection(ids=ids), [], max_cases=10)
    assert isinstance(error, CommandError) and "11 test cases" in error.message


def test_resolve_empty_selection() -> None:
    error = resolve_tests(TestSelection(), DEFINITIONS)
    assert isinstance(error, CommandError) and "at least one test case" in error.message


def test_resolve_all_deduplicates_against_explicit_ids() -> None:
    selection = TestSelection(ids=("tcd_3",), everything=True)
    resolved = resolve_tests(selection, DEFINITIONS + DEFINITIONS[:2])
    assert resolved == ("tcd_3", "tcd_1", "tcd_2", "tcd_4", "tcd_5", "tcd_6")


# --------------------------------------------------------------------------- never raises


def _check(text: str) -> None:
    result = parse(text)
    assert isinstance(result, (CommandError, *COMMAND_TYPES))
    if isinstance(result, CommandError):
        assert_safe(result)
        assert isinstance(result.usage, str)
    if isinstance(result, RunCommand | ScheduleAddCommand):
        tests = result.tests
        assert tests.everything or tests.ids or tests.names
        assert len(set(tests.ids)) == len(tests.ids)
        assert all(name.strip() for name in tests.names)
        assert resolve_tests(tests, DEFINITIONS) is not None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join))
def test_parse_never_raises_on_command_like_text(text: str) -> None:
    _check(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_never_raises_on_any_text(text: str) -> None:
    _check(text)
    _check("llm_abc " + text)
    _check('schedule add "x" llm_abc ' + text)


def test_parse_never_raises_on_non_strings() -> None:
    for value in (None, 3, b"help"):
        assert isinstance(parse(value), CommandError)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "llm_abc " + "'a'b " * 800,  # quote openers with no boundary closer
        "llm_abc " + "<" * 4000,
        "llm_abc " + "\u2018x" * 2000,
        "llm_abc " + '"' * 4001,
        "schedule add " + "=" * 2000 + '"',
        "llm_abc " + "a=" * 2000 + "'",
    ],
)
def test_pathological_inputs_parse_to_a_command_or_an_error(text: str) -> None:
    """How fast they parse is a figure of `python -m bench.parsing`, not a unit test's."""
    assert isinstance(parse(text), (CommandError, *COMMAND_TYPES))


@pytest.mark.parametrize(
    ("text", "repeats"),
    [
        ("llm_abc tc_1 repeat=3", 3),
        ("run llm_abc repeat=5 tc_1,tc_2", 5),
        ("llm_abc all REPEAT=2", 2),
        ("llm_abc tc_1 repeat=1", 1),
        ("llm_abc tc_1", 1),
    ],
)
def test_repeat_option_anywhere_after_the_engine(text: str, repeats: int) -> None:
    command = ok(text)
    assert isinstance(command, RunCommand)
    assert command.repeats == repeats
    assert command.tests.ids or command.tests.everything


def test_a_quoted_name_with_an_equals_sign_is_a_name_not_an_option() -> None:
    command = ok('llm_abc "A=B transfer" repeat=2')
    assert isinstance(command, RunCommand)
    assert command.tests.names == ("A=B transfer",) and command.repeats == 2


# --------------------------------------------------------------------------- compare and min_pass

LLM3 = Engine("retell-llm", "llm_abc", 3)


def test_compare_two_versions() -> None:
    command = run("compare llm_abc@3 llm_abc@4 all")
    assert command == RunCommand(
        LLM3, TestSelection(everything=True), candidate=Engine("retell-llm", "llm_abc", 4)
    )
    assert command.compares and command.batches == 2
    assert run("Compare llm_abc@4 llm_abc@3 tc_1").candidate == LLM3  # B may be older


def test_compare_without_b_is_against_the_latest_version() -> None:
    command = run("COMPARE llm_abc@3 tc_1,tc_2")
    assert command.engine == LLM3
    assert command.candidate == LLM and command.candidate.version is None
    assert command.tests.ids == ("tc_1", "tc_2")


def test_compare_an_explicit_b_without_a_version_is_the_latest_too() -> None:
    assert run("compare llm_abc@3 llm_abc tc_1") == run("compare llm_abc@3 tc_1")


def test_compare_conversation_flows() -> None:
    command = run('compare conversation_flow_f@1 conversation_flow_f@2 "Refund request"')
    assert command.engine == Engine("conversation-flow", "conversation_flow_f", 1)
    assert command.candidate == Engine("conversation-flow", "conversation_flow_f", 2)
    assert command.tests.names == ("Refund request",)
    latest = run("compare conversation_flow_f@1 all").candidate
    assert latest == Engine("conversation-flow", "conversation_flow_f")


def test_compare_quoted_names_are_tests_not_b() -> None:
    command = run('compare llm_abc@3 "llm_abc@4"')
    assert command.candidate == LLM and command.tests.names == ("llm_abc@4",)


@pytest.mark.parametrize(
    "text",
    [
        "compare llm_abc@3 llm_abc@4 all repeat=3 min_pass=95",
        "compare llm_abc@3 min_pass=95 llm_abc@4 repeat=3 all",
        "compare MIN_PASS=95% llm_abc@3 llm_abc@4 all REPEAT=3",
    ],
)
def test_compare_with_repeat_and_min_pass_in_any_order(text: str) -> None:
    command = run(text)
    assert (command.repeats, command.min_pass, command.batches) == (3, 95.0, 6)
    assert command.candidate == Engine("retell-llm", "llm_abc", 4)
    assert command.tests.everything


@pytest.mark.parametrize(
    "text", ["llm_abc all repeat=2 min_pass=90", "run llm_abc min_pass=90 all repeat=2"]
)
def test_run_options_in_any_order(text: str) -> None:
    command = run(text)
    assert (command.repeats, command.min_pass) == (2, 90.0)
    assert not command.compares and command.candidate is None and command.batches == 2


def test_a_plain_run_has_no_gate_and_does_not_compare() -> None:
    command = run("llm_abc@3 all")
    assert command.min_pass is None and not command.compares and command.batches == 1


@pytest.mark.parametrize(
    ("value", "percent"),
    [
        ("95", 95.0),
        ("97.5", 97.5),
        ("90%", 90.0),
        ("100", 100.0),
        ("100%", 100.0),
        ("0", 0.0),
        ("0.0", 0.0),
        ("1", 1.0),
        ("99.99", 99.99),
    ],
)
def test_min_pass_forms_accepted(value: str, percent: float) -> None:
    assert run(f"llm_abc all min_pass={value}").min_pass == percent


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("101", ["`min_pass=` is a percentage, at most 100", "`101`"]),
        ("100.5", ["at most 100"]),
        ("1000", ["at most 100", "`1000`"]),
        ("high", ["`min_pass=` takes a pass rate in percent from 0 to 100", "got `high`"]),
        ("-5", ["pass rate in percent", "got `-5`"]),
        ("", ["`min_pass=` needs a value", "`min_pass=95`"]),
        ("0.95", ["`min_pass=0.95` looks like a fraction", "write `min_pass=95` for 95%"]),
        ("0.5", ["min_pass is a percentage: write `min_pass=50` for 50%"]),
        ("0.975", ["write `min_pass=97.5` for 97.5%"]),
        ("0.95%", ["write `min_pass=95` for 95%"]),
        ("97.555", ["at most two decimals", "`97.555`"]),
        ("95%%", ["got `95%%`"]),
    ],
)
def test_min_pass_forms_refused(value: str, expected: list[str]) -> None:
    for text, topic in [
        (f"llm_abc all min_pass={value}", "run"),
        (f"compare llm_abc@3 all min_pass={value}", "compare"),
        (f'schedule add "hourly" llm_abc all min_pass={value}', "schedule"),
    ]:
        error = err(text)
        for fragment in expected:
            assert fragment in error.message, (fragment, error.message)
        assert error.topic == topic


def test_schedule_add_compare_with_b() -> None:
    command = ok(
        'schedule add "daily 09:00" compare llm_abc@3 llm_abc@4 all min_pass=95 notify=failures'
    )
    assert command == ScheduleAddCommand(
        "daily 09:00",
        LLM3,
        TestSelection(everything=True),
        options={"notify": "failures"},
        min_pass=95.0,
        candidate=Engine("retell-llm", "llm_abc", 4),
    )
    assert command.compares


def test_schedule_add_compare_without_b_is_against_the_latest() -> None:
    command = ok("schedule add 'hourly' COMPARE conversation_flow_f@2 name=nightly tc_1")
    assert isinstance(command, ScheduleAddCommand)
    assert command.engine == Engine("conversation-flow", "conversation_flow_f", 2)
    assert command.candidate == Engine("conversation-flow", "conversation_flow_f")
    assert command.name == "nightly" and command.tests.ids == ("tc_1",)


def test_schedule_add_min_pass_is_a_field_not_an_option() -> None:
    command = ok('schedule add "hourly" llm_abc min_pass=97.5% all mention=<@U1|bob>')
    assert isinstance(command, ScheduleAddCommand)
    assert command.min_pass == 97.5 and not command.compares
    assert dict(command.options) == {"mention": "<@U1>"}
    plain = ok('schedule add "hourly" llm_abc all')
    assert isinstance(plain, ScheduleAddCommand) and plain.min_pass is None


def test_compare_is_only_a_keyword_in_first_place() -> None:
    assert run("llm_abc compare").tests.ids == ("compare",)
    command = ok('schedule add "hourly" llm_abc compare')
    assert isinstance(command, ScheduleAddCommand) and command.tests.ids == ("compare",)
    assert not command.compares

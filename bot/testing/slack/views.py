"""The views.* methods: modals and App Home tabs, checked against the view's Block Kit limits."""

from __future__ import annotations

from bot.testing.slack.blockkit import (
    MAX_VIEW_BLOCKS,
    block_kit_violation,
)
from bot.testing.slack.params import param_json, param_str
from bot.testing.slack.records import (
    JSONDict,
    SlackApiFailure,
)
from bot.testing.slack.state import SlackState


class ViewsMixin(SlackState):
    """views.open, views.publish and views.update over the stored views."""

    def _stored_view(self, params: JSONDict) -> JSONDict:
        view = param_json(params, "view", None)
        if not isinstance(view, dict):
            raise SlackApiFailure("invalid_arguments", "view: must be an object")
        blocks = view.get("blocks", [])
        if not isinstance(blocks, list):
            raise SlackApiFailure("invalid_arguments", "view.blocks: must be a list")
        problem = block_kit_violation(None, blocks, max_blocks=MAX_VIEW_BLOCKS)
        if problem:
            raise SlackApiFailure("invalid_arguments", problem)
        return view

    def _views_open(self, params: JSONDict) -> JSONDict:
        if not param_str(params, "trigger_id"):
            raise SlackApiFailure("invalid_arguments", "trigger_id is required")
        view = {**self._stored_view(params), "id": self._new_id("V")}
        self.views[view["id"]] = view
        return {"view": view}

    def _views_publish(self, params: JSONDict) -> JSONDict:
        user_id = param_str(params, "user_id")
        if not user_id:
            raise SlackApiFailure("invalid_arguments", "user_id is required")
        self._user(user_id)
        view = {**self._stored_view(params), "id": self._new_id("V")}
        self.views[view["id"]] = view
        self.home_views[user_id] = view
        return {"view": view}

    def _views_update(self, params: JSONDict) -> JSONDict:
        view_id = param_str(params, "view_id")
        external_id = param_str(params, "external_id")
        current = next(
            (
                v
                for v in self.views.values()
                if v["id"] == view_id or (external_id and v.get("external_id") == external_id)
            ),
            None,
        )
        if current is None:
            raise SlackApiFailure("not_found", f"no view {view_id or external_id}")
        view = {**self._stored_view(params), "id": current["id"]}
        self.views[view["id"]] = view
        for user_id, home in self.home_views.items():
            if home["id"] == view["id"]:
                self.home_views[user_id] = view
        return {"view": view}

"""Stop in the widget, against a worker slow enough that Stop always lands mid-reply.

The bundled model answers a support question in about 100 ms in its default fast mode, so a
Stop pressed when the turn starts can arrive after the reply is stored (the reply is then
rightly complete). Vanilla diffusion takes about a second per reply: the cancellation path,
not the race, is what this module tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e._pages import WidgetDriver, open_page
from tests.e2e.conftest import Server, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``assistant serve`` whose worker decodes one token per step (vanilla diffusion)."""
    with serving(tmp_path_factory, ASSISTANT_DECODING_MODE="vanilla-diffusion") as running:
        yield running


def test_stop_button_cancels_the_reply_in_flight(browser: Any, server: Server) -> None:
    """Stop, pressed as soon as the turn starts, ends the reply as cancelled."""
    context, page, errors = open_page(browser, server.base_url + "/")
    try:
        widget = WidgetDriver(page)
        widget.open()
        widget.wait_online()
        # Press Stop the moment the gateway acknowledges the message (the turn has started).
        page.evaluate(
            """() => {
              const w = window.DlmWidget, c = w.connection, original = c.options.onEvent;
              const stop = document.querySelector('#dlm-widget').shadowRoot
                .querySelector('.cancel');
              window.__stopped = null;
              c.options.onEvent = (frame) => {
                original(frame);
                if (frame.type === 'user_message' && frame.turn_id && window.__stopped === null) {
                  window.__stopped = !stop.hidden;
                  stop.click();
                }
              };
            }"""
        )
        widget.send("How do returns work?")
        widget.wait_finals(1)
        assert page.evaluate("() => window.__stopped") is True
        final = widget.finals().nth(0)
        assert final.get_attribute("data-status") == "cancelled"
        assert final.locator(".rating").count() == 0
        assert widget.host.locator(".cancel").is_hidden()
        assert errors.errors == []
    finally:
        context.close()

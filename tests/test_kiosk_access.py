"""Who can reach the kiosk: loopback only by default; any other address needs an access token.

No test here sends a byte to an interface other than the loopback.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from kiosk_fixtures import running_kiosk

from runtime.kiosk import KioskConfigError, KioskServer

TOKEN = "field-box-7f3a9c21d4e8"


def listening_addresses(port: int) -> list[str]:
    """Local addresses of the sockets in LISTEN state on `port`, as the kernel lists them."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                if width == 8:
                    found.append(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    words = bytes.fromhex(address)
                    found.append(socket.inet_ntop(socket.AF_INET6, b"".join(words[i:i + 4][::-1] for i in range(0, 16, 4))))
    return found


def test_server_listens_on_loopback_only_by_default(tmp_path):
    with running_kiosk(tmp_path, model=None) as kiosk:
        assert kiosk.server.address[0] == "127.0.0.1"
        if Path("/proc/net/tcp").exists():
            assert listening_addresses(kiosk.server.port) == ["127.0.0.1"]
        status, _, _ = kiosk.request("GET", "/api/state")
        assert status == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "kiosk.local"])
def test_serving_beyond_the_loopback_without_a_token_is_refused(host):
    with pytest.raises(KioskConfigError, match="token"):
        KioskServer(lambda listener: None, store=None, host=host, port=0)


@pytest.mark.parametrize("token", ["short", "x" * 15, "has space in it 123", 'quote"quote"quote"', "semi;colon;semi;colon"])
def test_weak_or_unsafe_tokens_are_refused(token):
    with pytest.raises(KioskConfigError, match="token"):
        KioskServer(lambda listener: None, store=None, host="0.0.0.0", port=0, token=token)


def test_with_a_token_every_request_must_carry_it(tmp_path):
    with running_kiosk(tmp_path, model=None, token=TOKEN) as kiosk:
        for path in ("/", "/static/app.js", "/api/state", "/api/today", "/api/export?format=json"):
            assert kiosk.request("GET", path)[0] == 401, path
        assert kiosk.request("POST", "/api/patients", {"consent": True})[0] == 401
        assert kiosk.count("patients") == 0
        assert kiosk.request("GET", "/api/state", headers={"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
        assert kiosk.request("GET", "/api/state", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert kiosk.request("GET", "/?token=wrong-token-0123456789")[0] == 401


def test_opening_the_token_link_once_sets_a_cookie_for_the_app(tmp_path):
    import http.client

    with running_kiosk(tmp_path, model=None, token=TOKEN) as kiosk:
        connection = http.client.HTTPConnection("127.0.0.1", kiosk.server.port, timeout=10)
        connection.request("GET", f"/?token={TOKEN}")
        response = connection.getresponse()
        response.read()
        assert response.status == 303 and response.getheader("Location") == "/"
        cookie = response.getheader("Set-Cookie")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        connection.request("GET", "/api/state", headers={"Cookie": cookie.split(";")[0]})
        response = connection.getresponse()
        assert response.status == 200 and b'"type": "state"' in response.read()
        connection.close()


def test_every_quality_reason_has_a_sentence_in_each_language_of_the_app():
    """The recording screen and the result's retake list say what to do about each reason."""
    import re
    from pathlib import Path

    from runtime.quality import REASONS

    text = (Path(__file__).resolve().parents[1] / "runtime" / "kiosk" / "static" / "i18n.js").read_text(encoding="utf-8")
    english, portuguese = text[text.index("  en: {"):text.index("  pt: {")], text[text.index("  pt: {"):]
    for language in (english, portuguese):
        keys = set(re.findall(r'"(quality\.[a-z_]+)":', language))
        assert keys == {f"quality.{reason}" for reason in REASONS}


def test_the_reuse_consent_checkbox_is_labelled_in_both_languages_and_sent_by_the_app():
    import re
    from pathlib import Path

    static = Path(__file__).resolve().parents[1] / "runtime" / "kiosk" / "static"
    text = (static / "i18n.js").read_text(encoding="utf-8")
    english, portuguese = text[text.index("  en: {"):text.index("  pt: {")], text[text.index("  pt: {"):]
    for language in (english, portuguese):
        label = re.search(r'"patient\.consent_reuse": "([^"]+)"', language)
        assert label is not None and re.search("retrain|retrein", label.group(1).lower())
    html = (static / "index.html").read_text(encoding="utf-8")
    assert 'id="consent_reuse"' in html and 'data-i18n="patient.consent_reuse"' in html
    assert 'consent_reuse: $("consent_reuse").checked' in (static / "app.js").read_text(encoding="utf-8")

"""Tuya request signing matches vectors computed here, from the documented algorithm (spec C.3).

The expected values come from `documented_sign` below, written from the vendor's text with hashlib and
hmac only; the code under test is never used to make them.
"""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from companion.platforms import tuya_signing

CLIENT_ID = "1KAD46OrT9HafiKdsXeg"
SECRET = "4OHBOnWOqaEC1mWXOpVL3yV50s0qGSRC"
ACCESS = "3f4eda2bdec17232f67c0b188af3eec1"
T = 1588925778000
NONCE = "5138cc3a9033d69856923fd07b491173"


def documented_sign(
    method: str,
    path: str,
    query: dict[str, str],
    body: bytes,
    t: int,
    access_token: str = "",
    nonce: str = "",
    headers: list[tuple[str, str]] | None = None,
) -> str:
    """stringToSign = METHOD\\nSHA256(body)\\nheaders\\nURL; sign = HMAC(secret, id+token+t+nonce+that)."""
    content_sha = hashlib.sha256(body).hexdigest()
    header_lines = "".join(name + ":" + value + "\n" for name, value in (headers or []))
    url = path
    if query:
        url = path + "?" + "&".join(k + "=" + query[k] for k in sorted(query.keys()))
    string_to_sign = method + "\n" + content_sha + "\n" + header_lines + "\n" + url
    message = CLIENT_ID + access_token + str(t) + nonce + string_to_sign
    return hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest().upper()


def client_sign(
    method: str,
    path: str,
    query: dict[str, str],
    body: bytes,
    t: int,
    access_token: str = "",
    nonce: str = "",
    headers: list[tuple[str, str]] | None = None,
) -> str:
    produced = tuya_signing.signed_request_headers(
        client_id=CLIENT_ID,
        secret=SECRET,
        t_ms=t,
        method=method,
        path=path,
        query=query,
        body=body,
        access_token=access_token,
        nonce=nonce,
        signed_headers=headers or [],
    )
    return produced["sign"]


def test_empty_body_hash_is_the_documented_constant() -> None:
    assert hashlib.sha256(b"").hexdigest() == tuya_signing.EMPTY_BODY_SHA256
    text = tuya_signing.string_to_sign("GET", "/v1.0/token", {"grant_type": "1"}, b"")
    assert text == f"GET\n{tuya_signing.EMPTY_BODY_SHA256}\n\n/v1.0/token?grant_type=1"


def test_token_call_is_signed_without_an_access_token() -> None:
    expected = documented_sign("GET", "/v1.0/token", {"grant_type": "1"}, b"", T)
    assert client_sign("GET", "/v1.0/token", {"grant_type": "1"}, b"", T) == expected
    assert len(expected) == 64 and expected == expected.upper()


def test_business_call_signs_client_id_token_time_nonce_and_body() -> None:
    body = b'{"bind_role_type":1,"role_id":"94300"}'
    path = "/v1.0/cloud/agent/ai/chat/b/devices/dev1/role-bindings"
    expected = documented_sign("POST", path, {}, body, T, ACCESS, NONCE)
    assert client_sign("POST", path, {}, body, T, ACCESS, NONCE) == expected
    # a different body byte changes the signature: the hash covers the exact bytes sent
    spaced = b'{"bind_role_type": 1, "role_id": "94300"}'
    assert client_sign("POST", path, {}, spaced, T, ACCESS, NONCE) != expected


def test_query_is_signed_sorted_by_key_whatever_order_it_is_given_in() -> None:
    path = "/v1.0/cloud/agent/ai/chat/b/devices/dev1/history"
    query = {"page_size": "20", "gmt_end": "1753079987512", "role_id": "94300", "bind_role_type": "1"}
    expected = documented_sign("GET", path, query, b"", T, ACCESS)
    assert client_sign("GET", path, query, b"", T, ACCESS) == expected
    canonical = tuya_signing.canonical_url(path, query)
    assert canonical.endswith("?bind_role_type=1&gmt_end=1753079987512&page_size=20&role_id=94300")


def test_signature_headers_are_listed_and_signed() -> None:
    headers = [("area_id", "29a33e8796834b1efa6"), ("call_id", "8afdb70ab2ed11eb85290242ac130003")]
    expected = documented_sign("GET", "/v1.0/devices/x", {}, b"", T, ACCESS, headers=headers)
    produced = tuya_signing.signed_request_headers(
        client_id=CLIENT_ID,
        secret=SECRET,
        t_ms=T,
        method="GET",
        path="/v1.0/devices/x",
        access_token=ACCESS,
        signed_headers=headers,
    )
    assert produced["sign"] == expected
    assert produced["Signature-Headers"] == "area_id:call_id"
    assert produced["area_id"] == "29a33e8796834b1efa6"


def test_headers_carry_method_time_and_token() -> None:
    produced = tuya_signing.signed_request_headers(
        client_id=CLIENT_ID, secret=SECRET, t_ms=T, method="GET", path="/p", access_token=ACCESS
    )
    assert produced["client_id"] == CLIENT_ID
    assert produced["sign_method"] == "HMAC-SHA256"
    assert produced["t"] == "1588925778000"
    assert produced["access_token"] == ACCESS
    assert "nonce" not in produced  # optional: omitted means an empty nonce in the signature


def test_booleans_are_written_as_json_words_in_queries() -> None:
    assert tuya_signing.query_value(False) == "false"
    assert tuya_signing.query_value(True) == "true"
    assert tuya_signing.query_value(20) == "20"


query_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
query_values = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="&=\n"), max_size=20)


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=st.from_regex(r"/v1\.0/[a-z/\-]{0,30}", fullmatch=True),
    query=st.dictionaries(query_keys, query_values, max_size=5),
    body=st.binary(max_size=200),
    t=st.integers(min_value=10**12, max_value=10**13 - 1),
    access_token=st.sampled_from(["", ACCESS]),
    nonce=st.sampled_from(["", NONCE]),
)
def test_any_request_signs_like_the_documented_algorithm(
    method: str, path: str, query: dict[str, str], body: bytes, t: int, access_token: str, nonce: str
) -> None:
    assert client_sign(method, path, query, body, t, access_token, nonce) == documented_sign(
        method, path, query, body, t, access_token, nonce
    )

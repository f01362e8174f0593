"""Schemathesis hooks for ledger (loaded by .ci/schemathesis through SCHEMATHESIS_HOOKS).

Authentication: every request is signed exactly as SPEC §6 says, on the request as it is
sent (a `requests` auth applied to the prepared request): X-Key-Id, X-Timestamp (unix
seconds), X-Nonce (fresh, 32 of [A-Za-z0-9_-]) and X-Signature = lowercase hex
HMAC-SHA256(secret, "{timestamp}\\n{nonce}\\n{METHOD}\\n{path and query as sent}\\n{hex sha256
of body}"). The admin key signs, a gateway's secret signs /gateways/{method}/notify, a console
session (signed in with the admin key) serves the console's own routes, and a portal link the
portal's. Schemathesis's probes without credentials (ignored_auth) go out unsigned.

Some rules of the API cross fields or resources, so JSON Schema cannot state them; the
document states them in prose.
- Rules between fields of one request: (page - 1) * size of a list is at most
  LEDGER_PAGE_OFFSET_MAX, `page` and `after` do not go together, `start_time` is not after
  `end_time`, and a card-number-like payer account passes the Luhn check. In positive cases
  `map_case` makes the generated request follow them, as a client would.
- Rules the request cannot show, which `filter_failure` drops exactly (and nothing else;
  the runner counts them): the scale of a refund's or a notification's amount is the
  payment's currency's, which the request does not name (400 "... decimal places allowed
  for ..."); and a JSON number with a fraction is accepted as an amount (SPEC §5) but not
  documented, because binary floating point cannot state a decimal scale.
"""

import hashlib
import hmac
import os
import secrets
import string
import threading
import time
from datetime import datetime, timezone

import requests
import schemathesis

BASE = os.environ["LEDGER_ST_BASE"]
KEY_ID = os.environ["LEDGER_ST_KEY_ID"]
SECRET = os.environ["LEDGER_ST_SECRET"]
GATEWAY_SECRETS = dict(
    pair.split(":", 1) for pair in os.environ["LEDGER_GATEWAY_SECRETS"].split(",") if pair
)
NONCE_ALPHABET = string.ascii_letters + string.digits + "_-"


def new_nonce() -> str:
    return "".join(secrets.choice(NONCE_ALPHABET) for _ in range(32))


def signature(secret: str, timestamp: str, nonce: str, method: str, target: str, body: bytes) -> str:
    message = f"{timestamp}\n{nonce}\n{method.upper()}\n{target}\n{hashlib.sha256(body).hexdigest()}"
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


class Signed(requests.auth.AuthBase):
    """Signs the prepared request: its method, path and query as sent, and its body bytes."""

    def __init__(self, key_id: str, secret: str):
        self.key_id = key_id
        self.secret = secret

    def __call__(self, request):
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        timestamp = str(int(time.time()))
        nonce = new_nonce()
        request.headers["X-Key-Id"] = self.key_id
        request.headers["X-Timestamp"] = timestamp
        request.headers["X-Nonce"] = nonce
        request.headers["X-Signature"] = signature(
            self.secret, timestamp, nonce, request.method, request.path_url, body
        )
        return request


def signed_request(method: str, path: str, body: bytes = b"") -> requests.Response:
    request = requests.Request(
        method, BASE + path, data=body, headers={"Content-Type": "application/json"}
    ).prepare()
    Signed(KEY_ID, SECRET)(request)
    return requests.Session().send(request, timeout=10)


class Console(requests.auth.AuthBase):
    """A fresh console session (signed in with the admin key): its cookie and CSRF token."""

    def __call__(self, request):
        answer = requests.post(
            BASE + "/api/v1/console/sessions",
            json={"key_id": KEY_ID, "secret": SECRET},
            timeout=10,
        )
        answer.raise_for_status()
        request.headers["Cookie"] = f"ledger_console={answer.cookies['ledger_console']}"
        request.headers["X-CSRF-Token"] = answer.json()["data"]["csrf_token"]
        return request


class Portal(requests.auth.AuthBase):
    """A member portal link's bearer token (one for the run: it lives 15 minutes)."""

    _token = None
    _lock = threading.Lock()

    def __call__(self, request):
        with Portal._lock:
            if Portal._token is None:
                answer = signed_request("POST", "/api/v1/portal/sessions", b'{"user_id":"U-schemathesis"}')
                answer.raise_for_status()
                Portal._token = answer.json()["data"]["url"].split("#token=", 1)[1]
        request.headers["Authorization"] = f"Bearer {Portal._token}"
        return request


@schemathesis.auth(refresh_interval=None)
class LedgerAuth:
    """Chooses the credentials an operation's document asks for."""

    def get(self, case, context):
        path = case.operation.path
        if path == "/api/v1/console/sessions/current":
            return Console()
        if path == "/api/v1/portal/session":
            return Portal()
        if path == "/api/v1/gateways/{method}/notify":
            method = str(case.path_parameters.get("method", ""))
            if method in GATEWAY_SECRETS:
                return Signed(method, GATEWAY_SECRETS[method])
        return Signed(KEY_ID, SECRET)

    def set(self, case, data, context):
        case._auth = data


def luhn_fixed(account: str) -> str:
    """The account with its last digit made the Luhn check digit, if it looks like a card."""
    digits = [c for c in account if c not in " -"]
    if not all(c in "0123456789" for c in digits) or not 12 <= len(digits) <= 19:
        return account
    total = 0
    for i, c in enumerate(reversed(digits[:-1])):
        d = int(c)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    check = str((10 - total % 10) % 10)
    last = max(i for i, c in enumerate(account) if c in "0123456789")
    return account[:last] + check + account[last + 1 :]


PAGE_OFFSET_MAX = int(os.environ.get("LEDGER_PAGE_OFFSET_MAX", "10000"))


def _time(text):
    try:
        t = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("payer"), dict):
        account = body["payer"].get("account")
        if isinstance(account, str):
            body["payer"]["account"] = luhn_fixed(account)
    query = case.query
    if isinstance(query, dict):
        if query.get("after") not in (None, "") and "page" in query:
            del query["page"]
        page, size = _int(query.get("page")), _int(query.get("size", 10))
        if page is not None and size and (page - 1) * size > PAGE_OFFSET_MAX:
            query["page"] = PAGE_OFFSET_MAX // size + 1
        start, end = _time(query.get("start_time")), _time(query.get("end_time"))
        if start and end and start > end:
            query["start_time"], query["end_time"] = query["end_time"], query["start_time"]
    return case


def _message(response) -> str:
    try:
        return str(response.json().get("message", ""))
    except Exception:
        return ""


def _fractional_amount(case) -> bool:
    body = case.body
    return isinstance(body, dict) and isinstance(body.get("amount"), float) and not body["amount"].is_integer()


FILTERED_LOG = os.environ.get("LEDGER_ST_FILTERED_LOG")
_filtered_lock = threading.Lock()


def _dropped(rule: str, case, response) -> bool:
    """Notes a failure a documented rule explains (the runner counts them), and drops it."""
    if FILTERED_LOG:
        with _filtered_lock, open(FILTERED_LOG, "a", encoding="utf-8") as f:
            f.write(f"{rule}\t{case.method} {case.operation.path}\t{response.status_code}\n")
    return False


@schemathesis.hook
def filter_failure(context, failure, case, response):
    kind = type(failure).__name__
    message = _message(response)
    path = case.operation.path
    if kind == "RejectedPositiveData" and response.status_code == 400:
        if path in ("/api/v1/payments/{payment_id}/refund", "/api/v1/gateways/{method}/notify") and (
            "decimal places allowed for" in message
        ):
            return _dropped("amount scale of the payment's currency", case, response)
    if kind == "AcceptedNegativeData" and _fractional_amount(case):
        return _dropped("fractional JSON number amount", case, response)
    return True

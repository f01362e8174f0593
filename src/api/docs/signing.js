// Signs each "Try it out" request of /docs in the browser, as SPEC §6 says and exactly as
// src/signing.rs does: lowercase hex HMAC-SHA256 (WebCrypto), keyed by the secret's UTF-8
// bytes, over "{timestamp}\n{nonce}\n{METHOD}\n{path and query as sent}\n{hex sha256 of body}",
// with a fresh nonce (32 of [A-Za-z0-9_-]) and timestamp (unix seconds) per request.
//
// The key id and secret live in this page's memory only (two inputs, read at each request):
// never in the browser's storage or a cookie; reloading the page forgets them.
'use strict';

const NONCE_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';
const encoder = new TextEncoder();

function toHex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, '0')).join('');
}

async function sha256Hex(bytes) {
  return toHex(await crypto.subtle.digest('SHA-256', bytes));
}

/** `{timestamp}\n{nonce}\n{METHOD}\n{path and query}\n{hex sha256 of body}`. */
async function stringToSign(timestamp, nonce, method, pathAndQuery, body) {
  return `${timestamp}\n${nonce}\n${method.toUpperCase()}\n${pathAndQuery}\n${await sha256Hex(body)}`;
}

/** Lowercase hex HMAC-SHA256 of the string to sign; `body` is the bytes sent (Uint8Array). */
async function sign(secret, timestamp, nonce, method, pathAndQuery, body) {
  const key = await crypto.subtle.importKey(
    'raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const message = await stringToSign(timestamp, nonce, method, pathAndQuery, body);
  return toHex(await crypto.subtle.sign('HMAC', key, encoder.encode(message)));
}

/** 32 characters of [A-Za-z0-9_-]: 64 symbols, so a random byte's low 6 bits are uniform. */
function newNonce() {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return Array.from(bytes, (b) => NONCE_ALPHABET[b & 63]).join('');
}

/** The bytes a request body is sent as (Swagger UI hands over text, or nothing). */
async function bodyBytes(body) {
  if (body === undefined || body === null) return new Uint8Array();
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof Blob) return new Uint8Array(await body.arrayBuffer());
  if (body instanceof URLSearchParams) return encoder.encode(body.toString());
  return encoder.encode(String(body));
}

/** Paths that are not signed (SPEC §11): everything outside /api/, the document itself. */
function isSigned(path) {
  return path.startsWith('/api/') && path !== '/api/v1/openapi.json'
    && !path.startsWith('/api/v1/checkout/') && path !== '/api/v1/console/sessions';
}

/** Swagger UI's requestInterceptor: adds the four signing headers to an /api/ request. */
async function signRequest(request, credentials, now = Date.now()) {
  const url = new URL(request.url, globalThis.location ? globalThis.location.href : 'http://localhost/');
  if (!isSigned(url.pathname) || !credentials.keyId || !credentials.secret) return request;
  const timestamp = String(Math.floor(now / 1000));
  const nonce = newNonce();
  const target = url.pathname + url.search;
  const signature = await sign(credentials.secret, timestamp, nonce, request.method || 'GET',
    target, await bodyBytes(request.body));
  request.headers = Object.assign({}, request.headers, {
    'X-Key-Id': credentials.keyId,
    'X-Timestamp': timestamp,
    'X-Nonce': nonce,
    'X-Signature': signature,
  });
  return request;
}

if (typeof module !== 'undefined' && module.exports) {
  // Node (the cross-check against src/signing.rs in tests/it/contract.rs).
  module.exports = { sign, stringToSign, newNonce, signRequest, isSigned };
} else {
  const field = (id) => document.getElementById(id);
  const credentials = () => ({ keyId: field('ledger-key-id').value.trim(), secret: field('ledger-secret').value });
  const showState = () => {
    const c = credentials();
    field('ledger-signing-state').textContent = c.keyId && c.secret
      ? `Signing every /api/ request as ${c.keyId}.`
      : 'Not signing: enter a key id and its secret to try the signed operations.';
  };
  field('ledger-key-id').addEventListener('input', showState);
  field('ledger-secret').addEventListener('input', showState);
  field('ledger-forget').addEventListener('click', () => {
    field('ledger-key-id').value = '';
    field('ledger-secret').value = '';
    showState();
  });
  showState();
  window.ui = SwaggerUIBundle({
    url: '/api/v1/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout',
    persistAuthorization: false,
    requestInterceptor: (request) => signRequest(request, credentials()),
  });
}

#!/usr/bin/env bash
# The README's quick start, as one block: with `cargo run --release -- serve` running in
# another terminal, paste it into a shell or run `bash docs/quickstart.sh`.
# tests/it/first_ten_minutes.rs runs this very file against a fresh server.
set -euo pipefail
L="${LEDGER:-cargo run --release -q --}"
ORDER="ORD-$(date +%s)-$RANDOM"   # a new order each run: one live payment per order

# Create a payment; keep its id, then read its payment_no (the gateway's reference).
ID=$($L api --field data.payment_id POST /api/v1/payments/create "$(printf '{"amount":"100.00","currency":"CNY","payment_method":"alipay","order_id":"%s","user_id":"U-1","payer":{"name":"张三","account":"4111111111111111"}}' "$ORDER")")
NO=$($L api --field data.payment_no GET "/api/v1/payments/$ID")
echo "payment $ID ($NO)"

# Pay it as the gateway would: a notification signed with the gateway's secret.
# (Or open the payment's data.payment_url in a browser and click Pay.)
$L api --gateway alipay POST /api/v1/gateways/alipay/notify "$(printf '{"payment_no":"%s","callback_no":"CB-%s","status":"success","amount":"100.00","gateway_trade_no":"T-%s"}' "$NO" "$ORDER" "$ORDER")"

# Refund part of it, then read it back.
REFUND=$($L api --field data.refund_no POST "/api/v1/payments/$ID/refund" '{"amount":"30.00","reason":"customer request"}')
echo "refund $REFUND"
$L api GET "/api/v1/payments/$ID"
$L api --field data.status GET "/api/v1/payments/$ID/status"
$L api GET '/api/v1/payments/history?user_id=U-1'
$L api GET '/api/v1/payments?status=success&page=1&size=10'

# Audit: the payment's events with their hashes, the whole chain, the day's totals.
$L api GET "/api/v1/payments/$ID/events"
$L verify
$L api GET "/api/v1/ledger/totals?currency=CNY&start_time=$(date -u +%Y-%m-%d)T00:00:00Z"

//! The shortest end-to-end path: create, pay, refund, read back, through the real service,
//! PostgreSQL and NATS.

use crate::common::{data, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_created_paid_refunded_and_read_back() {
    let app = TestApp::spawn().await;
    let id = app.paid_payment("100.00").await;
    let refund = app
        .client("operator")
        .send(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            Some(r#"{"amount":"100.00","reason":"customer asked"}"#),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(refund.status, 201, "{}", refund.body);
    // The refund process confirms through the sandbox gateway; wait for it to be projected.
    let mut status = String::new();
    for _ in 0..100 {
        let a = app
            .client("client")
            .send("GET", &format!("/api/v1/payments/{id}/status"), None, &[])
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        status = data(&a)["status"].as_str().unwrap().to_owned();
        if status == "refunded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status, "refunded");
    let detail = app
        .client("auditor")
        .send("GET", &format!("/api/v1/payments/{id}"), None, &[])
        .await
        .unwrap();
    assert_eq!(data(&detail)["refunded_amount"], "100.00");
    assert_eq!(data(&detail)["refunds"][0]["status"], "success");
    assert!(detail.position.unwrap() >= 5);
    app.stop().await;
}

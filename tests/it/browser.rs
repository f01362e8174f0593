//! The pages end to end in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven over WebDriver: a member pays through checkout and the gateway's
//! page, a failed payment offers the way back, a portal link in Chinese and English (and
//! expired), an operator's refund, an auditor's verification and digest, finance's totals and
//! reconciliation, refused sign-ins, and a cross-site POST carrying the session cookie.
//!
//! Each test starts its own `chromedriver` on a free port with a fresh profile and download
//! folder, and its own `TestApp`, and stops them after (also when it fails). Every wait polls
//! for a condition with a bounded timeout; nothing sleeps to hide a race. Each test saves a
//! screenshot of its main view in `target/screenshots/` (not committed); with
//! `LEDGER_UPDATE_SCREENSHOTS=1` the README's screenshots in `docs/screenshots/` are
//! refreshed too.

use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{data, TestApp};
use crate::pages_api::{create_for, paid_for};

/// Longest any wait in a browser test lasts.
const WAIT: Duration = Duration::from_secs(30);
/// How often a waited-for condition is checked again.
const POLL: Duration = Duration::from_millis(100);
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

const DESKTOP: (u32, u32) = (1280, 800);
const PHONE: (u32, u32) = (390, 844);

type Check<'a, T> = Pin<Box<dyn Future<Output = Option<T>> + Send + 'a>>;

fn chromium_binary() -> &'static str {
    // The Debian wrapper script only adds flags from /etc/chromium.d; the binary behind it
    // starts faster and prints nothing on stderr.
    if Path::new("/usr/lib/chromium/chromium").exists() {
        "/usr/lib/chromium/chromium"
    } else {
        "/usr/bin/chromium"
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

fn screenshot_dir() -> PathBuf {
    crate::common::repo().join("target/screenshots")
}

fn temp_dir(kind: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("ledger-browser-{kind}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// How a browser is started.
struct Setup {
    /// `--lang` and the Accept-Language the browser starts with.
    lang: &'static str,
    /// A phone's screen (390×844, touch) instead of a desktop window.
    phone: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            lang: "en-US",
            phone: false,
        }
    }
}

/// A headless Chromium behind its own chromedriver. `close` ends both; if a test fails first,
/// `Drop` ends the WebDriver session (which quits Chromium) and then the driver.
struct Browser {
    client: Client,
    driver: Child,
    driver_port: u16,
    session_id: Option<String>,
    profile: PathBuf,
    downloads: PathBuf,
    /// The test's name: its screenshots are named after it.
    name: String,
    base: String,
}

impl Browser {
    async fn start(app: &TestApp, name: &str, setup: Setup) -> Browser {
        assert!(
            Path::new(CHROMEDRIVER).exists(),
            "{CHROMEDRIVER} is missing: apt-get install -y chromium chromium-driver (.ci/install-test-deps)"
        );
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        wait_for_driver(&url).await;
        let profile = temp_dir("profile");
        let downloads = temp_dir("downloads");
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--lang={}", setup.lang),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut options = json!({
            "binary": chromium_binary(),
            "prefs": {
                "download.default_directory": downloads.display().to_string(),
                "download.prompt_for_download": false,
                "intl.accept_languages": setup.lang,
            },
        });
        if setup.phone {
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": PHONE.0, "height": PHONE.1, "pixelRatio": 1.0, "touch": true },
            });
        } else {
            args.push(format!("--window-size={},{}", DESKTOP.0, DESKTOP.1));
        }
        options["args"] = json!(args);
        let mut caps = Capabilities::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("open a WebDriver session in Chromium");
        let session_id = client.session_id().await.ok().flatten();
        let browser = Browser {
            client,
            driver,
            driver_port: port,
            session_id,
            profile,
            downloads,
            name: name.to_owned(),
            base: app.base.clone(),
        };
        if !setup.phone {
            browser.fit_viewport(DESKTOP).await;
        }
        browser
    }

    /// Makes the page's viewport exactly `size` (the window also has a frame).
    async fn fit_viewport(&self, size: (u32, u32)) {
        let inner = self
            .client
            .execute("return [window.innerWidth, window.innerHeight]", vec![])
            .await
            .expect("viewport size");
        let w = inner[0].as_u64().unwrap_or(size.0 as u64) as u32;
        let h = inner[1].as_u64().unwrap_or(size.1 as u64) as u32;
        if (w, h) != size {
            let (ow, oh) = self.client.get_window_size().await.expect("window size");
            self.client
                .set_window_size(ow as u32 + size.0 - w, oh as u32 + size.1 - h)
                .await
                .expect("resize window");
        }
    }

    async fn goto(&self, path: &str) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        self.client.goto(&url).await.expect("navigate");
    }

    /// Polls `check` until it gives a value, at most `WAIT`; on time-out saves a screenshot
    /// and fails naming `what`.
    async fn until<T>(&self, what: &str, check: impl Fn(Client) -> Check<'static, T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = check(self.client.clone()).await {
                return v;
            }
            if Instant::now() > deadline {
                self.shot(&format!("{}-timeout", self.name)).await;
                let url = self.client.current_url().await.map(|u| u.to_string());
                panic!("{}: timed out waiting for {what} (at {url:?})", self.name);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The first element matching `css`, once there is one and it is displayed.
    async fn find(&self, css: &str) -> Element {
        let sel = css.to_owned();
        self.until(&format!("{css} to be shown"), move |c| {
            let sel = sel.clone();
            Box::pin(async move {
                let e = c.find(Locator::Css(&sel)).await.ok()?;
                e.is_displayed().await.ok()?.then_some(e)
            })
        })
        .await
    }

    /// Waits until the element matching `css` has `attr` equal to `value`.
    async fn attr_is(&self, css: &str, attr: &str, value: &str) {
        let (sel, attr_name, want) = (css.to_owned(), attr.to_owned(), value.to_owned());
        self.until(&format!("{css}[{attr}={value}]"), move |c| {
            let (sel, attr_name, want) = (sel.clone(), attr_name.clone(), want.clone());
            Box::pin(async move {
                let e = c.find(Locator::Css(&sel)).await.ok()?;
                (e.attr(&attr_name).await.ok()?? == want).then_some(())
            })
        })
        .await
    }

    /// Waits until the text of the element matching `css` contains `needle`; returns it.
    async fn text_has(&self, css: &str, needle: &str) -> String {
        let (sel, want) = (css.to_owned(), needle.to_owned());
        self.until(&format!("{css} to show {needle:?}"), move |c| {
            let (sel, want) = (sel.clone(), want.clone());
            Box::pin(async move {
                let e = c.find(Locator::Css(&sel)).await.ok()?;
                let text = e.text().await.ok()?;
                text.contains(&want).then_some(text)
            })
        })
        .await
    }

    /// Waits until exactly `n` elements match `css`; returns them.
    async fn count(&self, css: &str, n: usize) -> Vec<Element> {
        let sel = css.to_owned();
        self.until(&format!("{n} of {css}"), move |c| {
            let sel = sel.clone();
            Box::pin(async move {
                let all = c.find_all(Locator::Css(&sel)).await.ok()?;
                (all.len() == n).then_some(all)
            })
        })
        .await
    }

    /// Waits until the address is `path` (query and fragment aside).
    async fn at(&self, path: &str) {
        let want = path.to_owned();
        self.until(&format!("the address {path}"), move |c| {
            let want = want.clone();
            Box::pin(async move { (c.current_url().await.ok()?.path() == want).then_some(()) })
        })
        .await
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect("script")
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("type");
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Signs in through the console's form.
    async fn sign_in(&self, key_id: &str, secret: &str) {
        self.goto("/console/login").await;
        self.type_into("input[data-testid=login-key-id]", key_id)
            .await;
        self.type_into("input[data-testid=login-secret]", secret)
            .await;
        self.click("[data-testid=login-submit]").await;
    }

    /// Saves a screenshot of the viewport as `target/screenshots/{name}.png`, and as
    /// `docs/screenshots/{name}.png` too when asked to refresh those.
    async fn shot(&self, name: &str) {
        let png = match self.client.screenshot().await {
            Ok(png) => png,
            Err(e) => {
                eprintln!("{}: no screenshot: {e}", self.name);
                return;
            }
        };
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), &png).expect("save screenshot");
        if std::env::var("LEDGER_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1")
            && DOC_SHOTS.contains(&name)
        {
            let docs = crate::common::repo().join("docs/screenshots");
            std::fs::create_dir_all(&docs).expect("docs/screenshots");
            std::fs::write(docs.join(format!("{name}.png")), &png).expect("save doc screenshot");
        }
    }

    /// Ends the session (Chromium quits) and the driver.
    async fn close(mut self) {
        let client = self.client.clone();
        if client.close().await.is_ok() {
            self.session_id = None;
        }
    }
}

/// The README's screenshots (`docs/screenshots/`).
const DOC_SHOTS: [&str; 8] = [
    "checkout",
    "checkout-phone",
    "portal-zh",
    "portal-zh-phone",
    "console-payments",
    "payment-detail",
    "audit",
    "finance",
];

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that failed midway still ends its browser: the WebDriver session is deleted
        // with a plain HTTP request (no async runtime is usable here), so Chromium quits.
        if let Some(id) = self.session_id.take() {
            let _ = delete_session(self.driver_port, &id);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
        let _ = std::fs::remove_dir_all(&self.downloads);
    }
}

fn delete_session(port: u16, id: &str) -> std::io::Result<()> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    Ok(())
}

/// Waits (bounded) until chromedriver answers that it is ready.
async fn wait_for_driver(url: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(r) = http.get(format!("{url}/status")).send().await {
            if let Ok(v) = r.json::<Value>().await {
                if v["value"]["ready"] == true {
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not start at {url}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits (bounded) until the payment's status is `status` (read with the operator's key).
async fn status_becomes(app: &TestApp, id: &str, status: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let a = app
            .client("operator")
            .send("GET", &format!("/api/v1/payments/{id}/status"), None, &[])
            .await
            .expect("status");
        if data(&a)["status"] == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "payment {id} never became {status}: {}",
            a.body
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits (bounded) until every refund of the payment has left `processing`.
async fn refunds_settled(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let a = app
            .client("operator")
            .send("GET", &format!("/api/v1/payments/{id}"), None, &[])
            .await
            .expect("detail");
        let refunds = data(&a)["refunds"].as_array().cloned().unwrap_or_default();
        if !refunds.is_empty() && refunds.iter().all(|r| r["status"] != "processing") {
            return data(&a).clone();
        }
        assert!(
            Instant::now() < deadline,
            "refunds of {id} still processing"
        );
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------
// the member

#[tokio::test]
async fn a_member_pays_through_checkout_and_the_gateway_page_and_sees_it_paid() {
    let app = TestApp::spawn().await;
    let (id, no) = create_for(&app, "member-1", "88.80", json!({})).await;
    let b = Browser::start(&app, "checkout_paid", Setup::default()).await;
    b.goto(&format!("/checkout/{no}")).await;
    b.text_has("[data-testid=checkout-amount]", "88.80").await;
    b.attr_is("[data-testid=checkout-status]", "data-status", "pending")
        .await;
    assert_eq!(b.js("return document.documentElement.lang").await, "en");
    b.shot("checkout").await;

    // On to the gateway's page, and pay there.
    b.click("[data-testid=checkout-pay]").await;
    b.at(&format!("/sandbox/pay/{no}")).await;
    b.click("#pay").await;
    status_becomes(&app, &id, "success").await;
    // Back at the checkout (the gateway's page may lead back by itself; a member may also
    // reopen the link): the result shows the payment paid.
    if !b
        .client
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/checkout/")
    {
        b.goto(&format!("/checkout/{no}")).await;
    }
    b.attr_is("[data-testid=checkout-status]", "data-status", "success")
        .await;
    b.text_has("[data-testid=checkout-result]", "Payment received")
        .await;
    b.shot("checkout_paid").await;
    b.close().await;
}

#[tokio::test]
async fn a_pending_checkout_follows_the_payment_live_until_it_is_paid() {
    let app = TestApp::spawn().await;
    let (_, no) = create_for(&app, "member-1", "12.00", json!({})).await;
    let b = Browser::start(&app, "checkout_live", Setup::default()).await;
    b.goto(&format!("/checkout/{no}")).await;
    b.attr_is("[data-testid=checkout-status]", "data-status", "pending")
        .await;
    // The gateway reports success while the member waits on the page.
    assert_eq!(app.pay("alipay", &no, "12.00").await.status, 200);
    b.attr_is("[data-testid=checkout-status]", "data-status", "success")
        .await;
    b.find("[data-testid=checkout-result]").await;
    b.shot("checkout_live").await;
    b.close().await;
}

#[tokio::test]
async fn a_failed_payment_shows_its_reason_and_the_way_back_to_the_merchant() {
    let app = TestApp::spawn().await;
    let return_url = "https://shop.example/cart?retry=1";
    let (id, no) = create_for(
        &app,
        "member-1",
        "15.00",
        json!({ "return_url": return_url }),
    )
    .await;
    let b = Browser::start(&app, "checkout_failed", Setup::default()).await;
    b.goto(&format!("/checkout/{no}")).await;
    b.click("[data-testid=checkout-pay]").await;
    b.at(&format!("/sandbox/pay/{no}")).await;
    b.click("#fail").await;
    status_becomes(&app, &id, "failed").await;
    if !b
        .client
        .current_url()
        .await
        .unwrap()
        .path()
        .starts_with("/checkout/")
    {
        b.goto(&format!("/checkout/{no}")).await;
    }
    b.attr_is("[data-testid=checkout-status]", "data-status", "failed")
        .await;
    let reason = b
        .find("[data-testid=checkout-reason]")
        .await
        .text()
        .await
        .unwrap();
    assert!(!reason.trim().is_empty(), "the reason is shown");
    let back = b.find("[data-testid=checkout-return]").await;
    assert_eq!(
        back.attr("href").await.unwrap().as_deref(),
        Some(return_url)
    );
    b.shot("checkout_failed").await;
    b.close().await;
}

#[tokio::test]
async fn a_portal_link_shows_the_members_payments_in_chinese_and_english_and_expires() {
    let app = TestApp::spawn().await;
    let (refunded, _) = paid_for(&app, "member-p", "20.00").await;
    let r = app
        .client("operator")
        .send(
            "POST",
            &format!("/api/v1/payments/{refunded}/refund"),
            Some(r#"{"amount":"8.00","reason":"returned one item"}"#),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    refunds_settled(&app, &refunded).await;
    let (pending, _) = create_for(&app, "member-p", "5.00", json!({})).await;
    paid_for(&app, "someone-else", "99.00").await;
    let link = app
        .client("client")
        .send(
            "POST",
            "/api/v1/portal/sessions",
            Some(&json!({ "user_id": "member-p" }).to_string()),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(link.status, 201, "{}", link.body);
    let url = data(&link)["url"].as_str().unwrap().to_owned();

    let b = Browser::start(
        &app,
        "portal",
        Setup {
            lang: "zh-CN",
            phone: false,
        },
    )
    .await;
    b.goto(&url).await;
    let rows = b.count("[data-testid=portal-row]", 2).await;
    assert!(
        rows[0].text().await.unwrap().contains("5.00"),
        "newest first"
    );
    assert_eq!(b.js("return document.documentElement.lang").await, "zh-CN");
    b.text_has("body", "我的支付").await;
    assert!(
        !b.client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("token"),
        "the token leaves the address bar"
    );
    let body = b.find("body").await.text().await.unwrap();
    assert!(!body.contains("99.00"), "only this member's payments");
    b.shot("portal-zh").await;

    // Switch to English: the same payments, in English, and the choice is remembered.
    b.click("[data-testid=language-switch] [lang=en]").await;
    b.until("html lang en", |c| {
        Box::pin(async move {
            let lang = c
                .execute("return document.documentElement.lang", vec![])
                .await
                .ok()?;
            (lang == "en").then_some(())
        })
    })
    .await;
    b.text_has("body", "My payments").await;
    b.count("[data-testid=portal-row]", 2).await;
    b.shot("portal-en").await;

    // One payment, opened (the newest: the pending one).
    b.click("[data-testid=portal-open]").await;
    b.at(&format!("/portal/payments/{pending}")).await;
    b.text_has("body", "5.00").await;

    // Past its 15 minutes the link is refused with a clear page.
    app.state
        .clock
        .set_offset(chrono::Duration::seconds(16 * 60));
    b.goto("/portal").await;
    b.find("[data-testid=portal-invalid]").await;
    b.shot("portal-expired").await;
    // An altered link too.
    app.state.clock.set_offset(chrono::Duration::zero());
    b.goto("/portal#token=altered.token").await;
    b.find("[data-testid=portal-invalid]").await;
    b.close().await;
}

#[tokio::test]
async fn checkout_and_portal_fit_a_phone_screen() {
    let app = TestApp::spawn().await;
    let (_, no) = create_for(&app, "member-m", "1234.56", json!({})).await;
    paid_for(&app, "member-m", "20.00").await;
    let link = app
        .client("client")
        .send(
            "POST",
            "/api/v1/portal/sessions",
            Some(&json!({ "user_id": "member-m" }).to_string()),
            &[],
        )
        .await
        .unwrap();
    let url = data(&link)["url"].as_str().unwrap().to_owned();
    let b = Browser::start(
        &app,
        "phone",
        Setup {
            lang: "zh-CN",
            phone: true,
        },
    )
    .await;
    // Nothing runs past the screen's edge, not even clipped inside a card.
    let fits = || async {
        let v = b
            .js(
                "return [window.innerWidth, document.documentElement.scrollWidth, \
                 [...document.querySelectorAll('body *')].filter((e) => { \
                   const r = e.getBoundingClientRect(); \
                   return r.width > 0 && r.height > 0 && r.right > window.innerWidth + 1; \
                 }).map((e) => e.tagName + '.' + e.className).slice(0, 5)]",
            )
            .await;
        assert_eq!(v[0], PHONE.0, "a phone's viewport");
        assert!(
            v[1].as_u64() <= v[0].as_u64(),
            "the page is wider than the screen: {v}"
        );
        assert_eq!(v[2], json!([]), "elements run past the screen's edge");
    };
    b.goto(&format!("/checkout/{no}")).await;
    b.text_has("[data-testid=checkout-amount]", "1234.56").await;
    b.find("[data-testid=checkout-pay]").await;
    fits().await;
    b.shot("checkout-phone").await;
    b.goto(&url).await;
    b.count("[data-testid=portal-row]", 2).await;
    fits().await;
    b.shot("portal-zh-phone").await;
    // The newest first: the paid one.
    b.click("[data-testid=portal-open]").await;
    b.text_has("body", "20.00").await;
    fits().await;
    b.shot("portal-payment-phone").await;
    b.close().await;
}

// ---------------------------------------------------------------------------------------
// the staff

#[tokio::test]
async fn an_operator_signs_in_filters_opens_a_payment_and_refunds_part_of_it() {
    let app = TestApp::spawn().await;
    let (_, first_no) = paid_for(&app, "member-1", "50.00").await;
    let (id, no) = paid_for(&app, "member-2", "100.00").await;
    let b = Browser::start(&app, "operator_refund", Setup::default()).await;
    b.sign_in("t-operator", "operator-secret-1").await;
    b.at("/console/payments").await;
    b.count("tr[data-testid=payments-row]", 2).await;
    b.shot("console-payments").await;

    // Filter by payment number.
    b.type_into("input[data-testid=filter-payment-no]", &no)
        .await;
    b.click("[data-testid=filter-apply]").await;
    let rows = b.count("tr[data-testid=payments-row]", 1).await;
    let text = rows[0].text().await.unwrap();
    assert!(text.contains(&no) && !text.contains(&first_no), "{text}");

    // Open it and refund 30.00 of 100.00.
    b.click("[data-testid=payments-open]").await;
    b.at(&format!("/console/payments/{id}")).await;
    b.text_has("[data-testid=detail-amount]", "100.00").await;
    b.text_has("[data-testid=detail-refundable-amount]", "100.00")
        .await;
    b.type_into("input[data-testid=refund-amount]", "30.00")
        .await;
    b.type_into("textarea[data-testid=refund-reason]", "damaged in transit")
        .await;
    b.click("[data-testid=refund-submit]").await;
    b.click(".el-message-box__btns .el-button--primary").await;
    b.text_has("[data-testid=detail-refunded-amount]", "30.00")
        .await;
    b.text_has("[data-testid=detail-refundable-amount]", "70.00")
        .await;
    b.count("tr[data-testid=refund-row]", 1).await;
    b.shot("payment-detail").await;

    let d = refunds_settled(&app, &id).await;
    assert_eq!(d["refunded_amount"], "30.00");
    assert_eq!(d["refunds"][0]["reason"], "damaged in transit");
    b.close().await;
}

#[tokio::test]
async fn an_auditor_verifies_the_chain_and_downloads_the_signed_digest() {
    let app = TestApp::spawn().await;
    paid_for(&app, "member-1", "10.00").await;
    let b = Browser::start(&app, "auditor", Setup::default()).await;
    b.sign_in("t-auditor", "auditor-secret-1").await;
    b.at("/console/audit").await;
    b.click("[data-testid=verify-run]").await;
    b.attr_is("[data-testid=verify-result]", "data-ok", "true")
        .await;
    b.shot("audit").await;

    b.click("[data-testid=digest-download]").await;
    let saved = b.text_has("[data-testid=digest-saved]", "digest-").await;
    // The file itself lands in the browser's download folder.
    let dir = b.downloads.clone();
    let file = b
        .until("the digest file", move |_| {
            let dir = dir.clone();
            Box::pin(async move {
                std::fs::read_dir(&dir)
                    .ok()?
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| {
                        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        name.starts_with("digest-") && name.ends_with(".json")
                    })
            })
        })
        .await;
    let digest: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    for field in [
        "position",
        "root_hash",
        "signed_at",
        "public_key",
        "signature",
    ] {
        assert!(!digest[field].is_null(), "{field} in {digest}");
    }
    let name = file.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(saved.contains(&name), "{saved} names {name}");
    b.close().await;
}

#[tokio::test]
async fn finance_sees_the_apis_totals_and_reconciles_a_settlement_file() {
    let app = TestApp::spawn().await;
    let (id, a) = paid_for(&app, "member-1", "100.00").await;
    let (_, b_no) = paid_for(&app, "member-2", "40.00").await;
    let r = app
        .client("operator")
        .send(
            "POST",
            &format!("/api/v1/payments/{id}/refund"),
            Some(r#"{"amount":"25.00","reason":"partial"}"#),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    refunds_settled(&app, &id).await;
    app.settle().await;
    let totals = app
        .client("finance")
        .send("GET", "/api/v1/ledger/totals", None, &[])
        .await
        .unwrap();
    let cny = data(&totals)["currencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["currency"] == "CNY")
        .cloned()
        .expect("CNY totals");

    let b = Browser::start(&app, "finance", Setup::default()).await;
    b.sign_in("t-finance", "finance-secret-1").await;
    b.at("/console/finance").await;
    b.attr_is("[data-testid=totals-matches]", "data-matches", "true")
        .await;
    let rows = b.count("tr[data-testid=totals-row]", 1).await;
    let row = rows[0].text().await.unwrap();
    for field in ["paid_amount", "refunded_amount", "net_amount"] {
        let v = cny[field].as_str().unwrap();
        assert!(row.contains(v), "{field} {v} shown in {row:?}");
    }
    assert_eq!(cny["paid_amount"], "140.00");
    assert_eq!(cny["refunded_amount"], "25.00");
    b.find("canvas").await;
    b.shot("finance").await;

    // Reconciliation: one line matches, one differs by 1.00, one is unknown.
    let csv_path = b.downloads.join("settlement.csv");
    std::fs::write(
        &csv_path,
        format!(
            "payment_no,gateway_trade_no,type,amount,fee,settled_at\n\
             {a},T1,payment,100.00,0.60,2030-01-01T00:00:00Z\n\
             {b_no},T2,payment,41.00,0.24,2030-01-01T00:00:00Z\n\
             P{},T3,payment,5.00,0,2030-01-01T00:00:00Z\n",
            "e".repeat(32)
        ),
    )
    .unwrap();
    b.goto("/console/reconcile").await;
    let input = b.find("input[data-testid=reconcile-file]").await;
    input
        .send_keys(csv_path.to_str().unwrap())
        .await
        .expect("choose the file");
    b.click("[data-testid=reconcile-submit]").await;
    b.attr_is("[data-testid=reconcile-summary]", "data-all-match", "false")
        .await;
    for (category, n) in [
        ("matched", "1"),
        ("amount_mismatch", "1"),
        ("missing_in_ledger", "1"),
    ] {
        b.text_has(
            &format!("[data-testid=reconcile-summary] li[data-category={category}] strong"),
            n,
        )
        .await;
    }
    // Three rows differ: the amount, the unknown payment, and the refund the file lacks.
    b.count("tr[data-testid=reconcile-row]", 3).await;
    b.shot("reconcile").await;
    b.close().await;
}

#[tokio::test]
async fn a_wrong_secret_and_a_client_key_are_refused_at_sign_in() {
    let app = TestApp::spawn().await;
    let b = Browser::start(&app, "sign_in_refused", Setup::default()).await;
    b.sign_in("t-operator", "not-the-secret").await;
    b.text_has("[data-testid=login-error]", "not correct").await;
    b.at("/console/login").await;
    b.sign_in("t-client", "client-secret-1").await;
    b.text_has("[data-testid=login-error]", "may not sign in")
        .await;
    b.at("/console/login").await;
    b.shot("sign_in_refused").await;
    // Nothing was kept in the browser: no session cookie, no secret in storage.
    let stored = b
        .js("return JSON.stringify([document.cookie, {...localStorage}, {...sessionStorage}])")
        .await;
    let stored = stored.as_str().unwrap();
    assert!(
        !stored.contains("secret-1") && !stored.contains("ledger_console"),
        "{stored}"
    );
    b.close().await;
}

/// Serves one HTML page from another origin (another port on the same host: the same site,
/// so a SameSite=Strict cookie *is* sent; the CSRF token and the Origin check must refuse).
async fn serve_foreign_page(html: String) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}"), task)
}

#[tokio::test]
async fn a_cross_site_post_carrying_the_session_cookie_is_refused() {
    let app = TestApp::spawn().await;
    let (id, _) = paid_for(&app, "member-1", "100.00").await;
    let b = Browser::start(&app, "cross_site", Setup::default()).await;
    b.sign_in("t-operator", "operator-secret-1").await;
    b.at("/console/payments").await;

    // A page elsewhere posts a refund to the ledger, by fetch and by a form that submits
    // itself, both carrying the browser's cookie (the body is valid JSON).
    let target = format!("{}/api/v1/payments/{id}/refund", app.base);
    let html = format!(
        r#"<!doctype html><html><head><title>win a prize</title></head><body>
<form id="f" method="POST" action="{target}" enctype="text/plain">
<input type="hidden" name='{{"amount":"1.00","reason":"x' value='"}}'>
</form>
<script>
fetch("{target}", {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{amount: "2.00", reason: "y"}})}})
  .finally(() => {{ document.title = "fetched"; document.getElementById("f").submit(); }});
</script></body></html>"#
    );
    let (foreign, server) = serve_foreign_page(html).await;
    b.goto(&foreign).await;
    // The form's answer is the ledger's refusal, shown in the browser.
    b.at(&format!("/api/v1/payments/{id}/refund")).await;
    let answer = b.text_has("body", "40301").await;
    assert!(answer.contains("\"data\":null"), "{answer}");
    b.shot("cross_site").await;

    // Nothing was refunded, and the session itself still works for the console.
    let d = app
        .client("operator")
        .send("GET", &format!("/api/v1/payments/{id}"), None, &[])
        .await
        .unwrap();
    assert_eq!(data(&d)["refunds"], json!([]), "{}", d.body);
    assert_eq!(data(&d)["refunded_amount"], "0.00");
    b.goto("/console/payments").await;
    b.count("tr[data-testid=payments-row]", 1).await;
    server.abort();
    b.close().await;
}

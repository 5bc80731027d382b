//! The dashboard in a real browser: the system Chromium, driven over the
//! DevTools protocol, against the real server started in-process.
//!
//! Skips (and passes) when no Chromium is installed, unless `CI` is set or
//! `PUNCTUAL_REQUIRE_BROWSER=1`. A different browser binary can be named with
//! `PUNCTUAL_CHROMIUM`. Leaves screenshots in `target/dashboard.png` (1280×800)
//! and `target/dashboard-phone.png` (390 px wide).
//!
//! One browser session walks through: live counters, rows and charts; where
//! the time went (the split of each row, its p99 lines on the latency chart);
//! the utilisation, the Producers panel and the schedule switched live; live
//! settings forcing infeasible drops and late outcomes, and the cause of the
//! misses in the rows, the Producers panel and the health hint; 5,000 events/s; phone
//! width; the server stopped and started again on the same port (the page
//! reconnects by itself, resuming with `since=`); the token prompt of a server
//! run with `--token`; and no errors from the page throughout.
//!
//! Also runs the dashboard's JavaScript unit tests (`tests/js/`) with
//! `node --test` when Node.js is installed.

use std::error::Error;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::protocol::cdp::{Emulation, Log, Page, Runtime};
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::Value;

type TestResult = Result<(), Box<dyn Error>>;

/// Waits are generous: the machine may be small and busy with other builds.
const WAIT: Duration = Duration::from_secs(20);

/// Installed before any page script runs: records uncaught errors, rejected
/// promises and `console.error` calls, and every WebSocket URL the page opens.
const INSTRUMENT: &str = r#"
(() => {
  const errors = [];
  Object.defineProperty(window, "__errors", { value: errors });
  window.addEventListener("error", (e) => errors.push("error: " + (e.message || e.type)));
  window.addEventListener("unhandledrejection", (e) => errors.push("unhandled rejection: " + String(e.reason)));
  const consoleError = console.error.bind(console);
  console.error = (...args) => { errors.push("console.error: " + args.map(String).join(" ")); consoleError(...args); };
  const urls = [];
  Object.defineProperty(window, "__wsUrls", { value: urls });
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(url, protocols) { urls.push(String(url)); super(url, protocols); }
  };
})();
"#;

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PUNCTUAL_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// The browser to drive; `None` (the test passes, saying it did not run)
/// when there is none, unless CI or `PUNCTUAL_REQUIRE_BROWSER=1` asks for one.
fn installed_chromium() -> Result<Option<PathBuf>, Box<dyn Error>> {
    if let Some(chromium) = chromium().filter(|p| p.is_file()) {
        return Ok(Some(chromium));
    }
    if std::env::var("PUNCTUAL_REQUIRE_BROWSER").as_deref() == Ok("1")
        || std::env::var_os("CI").is_some()
    {
        return Err("no chromium found, and CI or PUNCTUAL_REQUIRE_BROWSER=1 is set".into());
    }
    println!("skipped: no chromium");
    Ok(None)
}

/// A headless Chromium with its own profile, 1280×800.
fn launch(chromium: &Path, profile: &Path) -> Result<Browser, Box<dyn Error>> {
    let args: Vec<&OsStr> = [
        "--no-sandbox",
        "--headless",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    let options = LaunchOptions {
        path: Some(chromium.to_path_buf()),
        headless: true,
        sandbox: false,
        enable_gpu: false,
        window_size: Some((1280, 800)),
        user_data_dir: Some(profile.to_path_buf()),
        idle_browser_timeout: Duration::from_secs(120),
        args,
        ..LaunchOptions::default()
    };
    Ok(Browser::new(options)?)
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
}

/// The token the restarted server demands for changes.
const TOKEN: &str = "browser-test-token";

fn start_server(listen: SocketAddr, token: Option<&str>) -> std::io::Result<punctual::Server> {
    let cfg = punctual::Config {
        listen,
        token: token.map(str::to_owned),
        ..punctual::Config::for_tests()
    };
    punctual::Server::start(cfg)
}

/// Starts a server on exactly `addr`, retrying while the port is still held.
fn restart_on(addr: SocketAddr, token: Option<&str>) -> std::io::Result<punctual::Server> {
    let started = Instant::now();
    loop {
        match start_server(addr, token) {
            Ok(server) => return Ok(server),
            Err(e) if started.elapsed() < WAIT => {
                eprintln!("rebinding {addr}: {e}; retrying");
                thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Stops `server` on a helper thread, so a shutdown that never ends fails
/// the test with a message instead of hanging it.
fn stop_within(server: punctual::Server, limit: Duration) -> TestResult {
    let (done, stopped) = std::sync::mpsc::channel();
    thread::Builder::new()
        .name("stop-server".into())
        .spawn(move || {
            server.stop();
            let _ = done.send(());
        })?;
    stopped
        .recv_timeout(limit)
        .map_err(|_| format!("punctual::Server::stop() did not return within {limit:?}").into())
}

/// Owns the running server; if the test ends early it is stopped without
/// risking a hang in `Drop`.
struct Running(Option<punctual::Server>);

impl Running {
    fn take(&mut self) -> punctual::Server {
        self.0.take().expect("a server is running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(server) = self.0.take()
            && let Err(e) = stop_within(server, WAIT)
        {
            eprintln!("{e}");
        }
    }
}

/// What the browser reported on its own: exceptions, console errors, log errors.
#[derive(Default)]
struct BrowserReports {
    errors: Vec<String>,
    /// Failed WebSocket connection attempts, expected while the server is down.
    socket_failures: Vec<String>,
    /// 401 answers to PUT /api/config, which the browser logs as failed
    /// loads: expected, they are how the page learns it needs a token.
    auth_challenges: usize,
    /// Messages of the JavaScript dialogs (prompts) the page opened.
    dialogs: Vec<String>,
}

struct Dashboard {
    tab: Arc<Tab>,
    reports: Arc<Mutex<BrowserReports>>,
}

impl Dashboard {
    /// Opens `url` in `tab`, with every error the page reports collected.
    fn open(tab: Arc<Tab>, url: &str) -> Result<Self, Box<dyn Error>> {
        tab.set_default_timeout(WAIT);
        let reports = Arc::new(Mutex::new(BrowserReports::default()));
        let sink = Arc::clone(&reports);
        tab.add_event_listener(Arc::new(move |event: &Event| {
            let mut reports = sink.lock().unwrap_or_else(|e| e.into_inner());
            match event {
                Event::RuntimeExceptionThrown(e) => {
                    let d = &e.params.exception_details;
                    let what = d
                        .exception
                        .as_ref()
                        .and_then(|x| x.description.clone())
                        .unwrap_or_default();
                    reports.errors.push(format!(
                        "exception: {} {what} at {:?}:{}",
                        d.text, d.url, d.line_number
                    ));
                }
                Event::RuntimeConsoleAPICalled(e)
                    if matches!(
                        e.params.Type,
                        Runtime::ConsoleAPICalledEventTypeOption::Error
                            | Runtime::ConsoleAPICalledEventTypeOption::Assert
                    ) =>
                {
                    let args: Vec<String> = e
                        .params
                        .args
                        .iter()
                        .map(|a| format!("{:?}", a.value))
                        .collect();
                    reports
                        .errors
                        .push(format!("console.{:?}: {}", e.params.Type, args.join(" ")));
                }
                Event::PageJavascriptDialogOpening(e) => {
                    reports.dialogs.push(e.params.message.clone())
                }
                Event::LogEntryAdded(e) if e.params.entry.level == Log::LogEntryLevel::Error => {
                    let entry = &e.params.entry;
                    let is_config = entry
                        .url
                        .as_deref()
                        .is_some_and(|u| u.ends_with("/api/config"));
                    if entry.text.contains("WebSocket connection to") {
                        reports.socket_failures.push(entry.text.clone());
                    } else if is_config && entry.text.contains("status of 401") {
                        reports.auth_challenges += 1;
                    } else {
                        reports.errors.push(format!(
                            "log ({:?}): {} {:?}",
                            entry.source, entry.text, entry.url
                        ));
                    }
                }
                _ => {}
            }
        }))?;
        tab.enable_runtime()?;
        tab.enable_log()?;
        tab.call_method(Page::AddScriptToEvaluateOnNewDocument {
            source: INSTRUMENT.to_owned(),
            world_name: None,
            include_command_line_api: None,
            run_immediately: None,
        })?;
        tab.navigate_to(url)?;
        tab.wait_until_navigated()?;
        Ok(Dashboard { tab, reports })
    }

    /// Evaluates `expr` in the page and returns its value passed through JSON.
    fn eval(&self, expr: &str) -> Result<Value, Box<dyn Error>> {
        let wrapped = format!(
            "(() => {{ try {{ return JSON.stringify({{ ok: ({expr}) }}); }} \
             catch (e) {{ return JSON.stringify({{ thrown: String(e) }}); }} }})()"
        );
        let result = self.tab.evaluate(&wrapped, false)?;
        let text = result
            .value
            .and_then(|v| v.as_str().map(str::to_owned))
            .ok_or("evaluate returned no string")?;
        let mut parsed: Value = serde_json::from_str(&text)?;
        if let Some(thrown) = parsed.get("thrown") {
            return Err(format!("`{expr}` threw {thrown}").into());
        }
        Ok(parsed["ok"].take())
    }

    fn eval_async(&self, expr: &str) -> Result<Value, Box<dyn Error>> {
        let result = self
            .tab
            .evaluate(&format!("({expr}).then((v) => JSON.stringify(v))"), true)?;
        let text = result
            .value
            .and_then(|v| v.as_str().map(str::to_owned))
            .ok_or("evaluate returned no string")?;
        Ok(serde_json::from_str(&text)?)
    }

    /// A whole number shown in element `id` ("12,345" → 12345).
    fn count(&self, id: &str) -> Result<u64, Box<dyn Error>> {
        let v = self.eval(&format!(
            "Number((document.getElementById('{id}').textContent || '').replace(/[^0-9]/g, '') || -1)"
        ))?;
        v.as_i64()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| format!("#{id} shows no number").into())
    }

    fn text(&self, id: &str) -> Result<String, Box<dyn Error>> {
        let v = self.eval(&format!("document.getElementById('{id}').textContent"))?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The page's state, for failure messages.
    fn describe(&self) -> String {
        self.eval(
            "({ connection: document.getElementById('connection').textContent, \
                rows: document.querySelectorAll('#events tr').length, \
                stats: [...document.querySelectorAll('.stat')].map((s) => s.innerText.replace(/\\s+/g, ' ')), \
                health: document.getElementById('health-state').textContent, \
                knobs: document.getElementById('knobs-status').textContent, \
                errors: window.__errors })",
        )
        .map(|v| v.to_string())
        .unwrap_or_else(|e| format!("(page state unavailable: {e})"))
    }

    /// Polls `condition` (a JS expression) until it is true.
    fn wait_for(&self, what: &str, condition: &str) -> TestResult {
        let started = Instant::now();
        loop {
            if self.eval(condition)? == Value::Bool(true) {
                eprintln!(
                    "  ok after {:.1} s: {what}",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if started.elapsed() > WAIT {
                self.screenshot("dashboard-failure.png").ok();
                return Err(
                    format!("timed out waiting for {what}; page: {}", self.describe()).into(),
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls until the number in element `id` exceeds `above`.
    fn wait_count_above(&self, id: &str, above: u64) -> Result<u64, Box<dyn Error>> {
        let condition = format!(
            "Number(document.getElementById('{id}').textContent.replace(/[^0-9]/g, '') || -1) > {above}"
        );
        self.wait_for(&format!("#{id} > {above}"), &condition)?;
        self.count(id)
    }

    /// Sets a knob's number input as a user would (type, then commit) and waits for the server's answer.
    /// Types `value` into a knob's number input and commits it as a user would.
    fn type_knob(&self, input_id: &str, value: u64) -> TestResult {
        self.eval(&format!(
            "(() => {{ document.getElementById('knobs-status').className = 'knobs-status'; \
             const i = document.getElementById('{input_id}'); i.focus(); i.value = '{value}'; \
             i.dispatchEvent(new Event('input', {{ bubbles: true }})); \
             i.dispatchEvent(new Event('change', {{ bubbles: true }})); i.blur(); return true; }})()"
        ))?;
        Ok(())
    }

    /// Waits for the server's answer to a change and returns the status line.
    fn knob_answer(&self) -> Result<String, Box<dyn Error>> {
        self.wait_for(
            "the server's answer to a change",
            "/\\b(ok|error)\\b/.test(document.getElementById('knobs-status').className)",
        )?;
        self.text("knobs-status")
    }

    /// Sets a knob through its input and checks the server applied it.
    fn set_knob(&self, input_id: &str, value: u64) -> TestResult {
        self.type_knob(input_id, value)?;
        let status = self.knob_answer()?;
        assert!(
            status.starts_with("applied"),
            "setting {input_id} = {value} failed: {status}"
        );
        Ok(())
    }

    /// Waits (without touching the page, which a dialog blocks) for dialog number `n`.
    fn wait_for_dialog(&self, n: usize) -> Result<String, Box<dyn Error>> {
        let started = Instant::now();
        loop {
            let reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(message) = reports.dialogs.get(n - 1) {
                return Ok(message.clone());
            }
            drop(reports);
            if started.elapsed() > WAIT {
                return Err(
                    format!("no dialog number {n} appeared; page: {}", self.describe()).into(),
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, name: &str) -> TestResult {
        let png = self.tab.capture_screenshot(
            Page::CaptureScreenshotFormatOption::Png,
            None,
            None,
            true,
        )?;
        let dir = target_dir();
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), png)?;
        Ok(())
    }

    fn emulate_width(&self, width: u32, height: u32, mobile: bool) -> TestResult {
        self.tab.call_method(Emulation::SetDeviceMetricsOverride {
            width,
            height,
            device_scale_factor: 1.0,
            mobile,
            scale: None,
            screen_width: None,
            screen_height: None,
            position_x: None,
            position_y: None,
            dont_set_visible_size: None,
            screen_orientation: None,
            viewport: None,
            display_feature: None,
            device_posture: None,
        })?;
        Ok(())
    }
}

/// Counts pixels of a canvas within `tolerance` of each `[r, g, b]` colour,
/// plus all pixels that are not fully transparent.
fn canvas_pixels(id: &str, colors: &[[u8; 3]]) -> String {
    let colors = serde_json::to_string(colors).expect("colours serialise");
    format!(
        "(() => {{ const c = document.getElementById('{id}'); \
           const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
           const colors = {colors}; const hits = colors.map(() => 0); let painted = 0; \
           for (let i = 0; i < data.length; i += 4) {{ \
             if (data[i + 3] === 0) continue; painted++; \
             colors.forEach(([r, g, b], k) => {{ \
               if (data[i + 3] > 100 && Math.abs(data[i] - r) < 40 && Math.abs(data[i + 1] - g) < 40 \
                   && Math.abs(data[i + 2] - b) < 40) hits[k]++; }}); }} \
           return {{ painted, hits, width: c.width, height: c.height }}; }})()"
    )
}

/// A condition: the generator's row of the Producers panel names the cause
/// of its misses, matching the JavaScript regular expression `pattern`.
fn producer_cause(pattern: &str) -> String {
    format!(
        "[...document.querySelectorAll('#producers tr')].some((tr) => tr.cells[0].textContent === 'generator' \
           && {pattern}.test(tr.querySelector('td.c-cause').textContent))"
    )
}

#[test]
fn dashboard_shows_live_outcomes_takes_settings_and_reconnects() -> TestResult {
    let Some(chromium) = installed_chromium()? else {
        return Ok(());
    };

    let server = Running(Some(start_server("127.0.0.1:0".parse()?, None)?));
    let addr = server
        .0
        .as_ref()
        .map(punctual::Server::local_addr)
        .ok_or("no server")?;
    let url = format!("http://{addr}/");
    eprintln!("server on {url}, browser {}", chromium.display());

    let profile = TempProfile::new()?;
    drive(&chromium, &profile.0, server, addr, &url)
}

/// A fresh, empty browser profile directory, removed when dropped (also
/// when a failed assertion unwinds).
struct TempProfile(PathBuf);

impl TempProfile {
    fn new() -> Result<Self, Box<dyn Error>> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("punctual-browser-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempProfile(dir))
    }
}

impl Drop for TempProfile {
    fn drop(&mut self) {
        // Chromium's helper processes may still be writing for a moment after it exits.
        for _ in 0..25 {
            if std::fs::remove_dir_all(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

fn drive(
    chromium: &Path,
    profile: &Path,
    mut server: Running,
    addr: SocketAddr,
    url: &str,
) -> TestResult {
    let browser = launch(chromium, profile)?;
    let page = Dashboard::open(browser.new_tab()?, url)?;
    page.emulate_width(1280, 800, false)?;

    // Live: connected, counters rising, rows in the table.
    page.wait_for(
        "the connection to be live",
        "document.getElementById('connection').classList.contains('live')",
    )?;
    let on_time = page.wait_count_above("s-on-time", 0)?;
    page.wait_count_above("s-on-time", on_time)?;
    page.wait_for(
        "20 rows",
        "document.querySelectorAll('#events tr').length >= 20",
    )?;
    let cells = page.eval(
        "[...document.querySelectorAll('#events td')].map((td) => td.textContent).join('|')",
    )?;
    let cells = cells.as_str().unwrap_or_default();
    for bad in ["Invalid Date", "undefined", "NaN", "null"] {
        assert!(!cells.contains(bad), "the table shows {bad}: {cells}");
    }
    assert!(cells.contains("on-time"), "no on-time row: {cells}");
    // Every row says where its time went: queue / credit wait / work, in ms;
    // with the default 50 ms of work and an idle queue, the work is most of it.
    page.wait_for(
        "on-time rows with their split",
        "[...document.querySelectorAll('#events tr.st-on-time')].length >= 10 \
         && [...document.querySelectorAll('#events tr.st-on-time')].every((tr) => { \
              const m = /^([0-9.]+) \\/ ([0-9.]+) \\/ ([0-9.]+)$/.exec(tr.querySelector('td.c-split').textContent); \
              return m !== null && Number(m[3]) >= 40 && Number(m[1]) < 40 && Number(m[2]) === 0 \
                && /^queue .* · credit wait .* · work .* ms$/.test(tr.querySelector('td.c-split').title); })",
    )?;
    // Healthy means nothing missed its deadline lately: no hint then.
    page.wait_for(
        "health to say healthy, with no hint",
        "document.getElementById('health-state').textContent === 'healthy' \
         && document.getElementById('health-hint').hidden",
    )?;
    // The rule under the verdict is the daemon's, from its stats.
    let rule = page.text("health-rule")?;
    assert!(
        rule.starts_with("Over the last 5 s: overloaded when") && rule.contains("U ≥ 1"),
        "the health panel does not show the daemon's rule: {rule:?}"
    );

    // The health panel names the schedule and the utilisation; the Producers
    // panel shows the generator's row; the schedule control follows the server.
    page.wait_for(
        "the utilisation in the health panel",
        "!document.getElementById('h-util-row').hidden \
         && /^U \\d+\\.\\d\\d \\(headroom −?\\d+ %\\)$/.test(document.getElementById('h-util').textContent)",
    )?;
    page.wait_for(
        "the producers panel with the generator's row",
        "!document.getElementById('producers-panel').hidden \
         && [...document.querySelectorAll('#producers tr')].some((tr) => tr.cells[0].textContent === 'generator' \
              && /%$/.test(tr.cells[2].textContent))",
    )?;
    let schedule = page.eval("document.getElementById('k-schedule').value")?;
    assert_eq!(
        Value::String(page.text("h-schedule")?),
        schedule,
        "the schedule control and the health panel disagree"
    );
    // Switched live through the control, as a user would, and back.
    for order in ["edf", "fifo"] {
        page.eval(&format!(
            "(() => {{ const s = document.getElementById('k-schedule'); s.value = '{order}'; \
             s.dispatchEvent(new Event('change', {{ bubbles: true }})); return true; }})()"
        ))?;
        page.wait_for(
            &format!("schedule {order} to be applied and shown"),
            &format!(
                "document.getElementById('knobs-status').textContent === 'applied: schedule {order}' \
                 && document.getElementById('h-schedule').textContent === '{order}'"
            ),
        )?;
    }
    let producer_cells = page.eval(
        "[...document.querySelectorAll('#events td.c-producer')].map((td) => td.textContent).join('|')",
    )?;
    assert!(
        producer_cells
            .as_str()
            .unwrap_or_default()
            .contains("generator"),
        "no producer in the outcomes table: {producer_cells}"
    );

    // Both charts drawn: data in the series colours, not just axes.
    page.wait_for(
        "3 stats samples",
        "document.getElementById('s-uptime').textContent !== '–'",
    )?;
    thread::sleep(Duration::from_secs(4));
    let latency = page.eval(&canvas_pixels(
        "latency-chart",
        &[[0x2f, 0x6f, 0xd6], [0x7b, 0x3f, 0xc4], [0xc6, 0x28, 0x28]],
    ))?;
    eprintln!("latency chart pixels: {latency}");
    assert!(
        latency["painted"].as_u64() > Some(1000),
        "latency chart is blank: {latency}"
    );
    // p50 and p99 coincide when every event takes the same time, so they count together.
    let hits = |k: usize| latency["hits"][k].as_u64().unwrap_or(0);
    assert!(
        hits(0) + hits(1) > 10,
        "latency chart has no p50/p99 line: {latency}"
    );
    assert!(
        hits(2) > 100,
        "latency chart has no deadline line: {latency}"
    );
    // Where the time went: the p99 of queue wait and of work as dashed lines
    // in their own colours, named in the legend; the credit wait (0 outside
    // `--work pull`) neither drawn nor named.
    let legend = page.eval(
        "['key-queue', 'key-wait', 'key-work'].map((id) => !document.getElementById(id).hidden)",
    )?;
    assert_eq!(
        legend,
        serde_json::json!([true, false, true]),
        "the latency legend must name queue and work p99, and not credit wait"
    );
    let split = page.eval(&canvas_pixels(
        "latency-chart",
        &[[0x0f, 0x8f, 0x86], [0x8c, 0x5a, 0x2b]],
    ))?;
    eprintln!("latency chart split pixels: {split}");
    assert!(
        split["hits"][0].as_u64() > Some(10),
        "latency chart has no queue p99 line: {split}"
    );
    assert!(
        split["hits"][1].as_u64() > Some(10),
        "latency chart has no work p99 line: {split}"
    );
    let outcomes = page.eval(&canvas_pixels("outcomes-chart", &[[0x1f, 0x8a, 0x45]]))?;
    eprintln!("outcomes chart pixels: {outcomes}");
    assert!(
        outcomes["hits"][0].as_u64() > Some(50),
        "outcomes chart has no on-time band: {outcomes}"
    );

    // Work longer than the deadline: admission control drops events as infeasible...
    let infeasible = page.count("s-infeasible")?;
    page.set_knob("k-work", 300)?;
    page.wait_count_above("s-infeasible", infeasible + 5)?;
    page.wait_for(
        "health to say overloaded, and why in the daemon's words",
        "document.getElementById('health-state').textContent === 'overloaded' \
         && / late, failed or dropped|≥ 1: overloaded by design/.test(document.getElementById('health-reasons').textContent)",
    )?;
    // The misses are admission's: the rows, the Producers panel and the hint say so.
    page.wait_for(
        "an infeasible drop whose title names its cause",
        "[...document.querySelectorAll('#events tr.st-dropped td.status')].some((td) => \
           td.textContent === 'dropped · infeasible' && td.title.includes('cause: admission'))",
    )?;
    page.wait_for(
        "the generator's misses to be mostly admission's",
        &producer_cause("/^admission \\d+(\\.\\d+)? %$/"),
    )?;
    page.wait_for(
        "a hint about admission",
        "!document.getElementById('health-hint').hidden \
         && /^misses are admission \\(.* in the last 5 s\\): the predicted work no longer fits the time left/\
              .test(document.getElementById('health-hint').textContent)",
    )?;
    // ...and with admission off through its switch, they run and end late.
    let late = page.count("s-late")?;
    page.eval("document.getElementById('k-admission').click()")?;
    page.wait_for(
        "admission off to be applied",
        "document.getElementById('knobs-status').textContent.startsWith('applied: admission off')",
    )?;
    page.wait_count_above("s-late", late + 5)?;
    assert!(page.count("s-dropped")? > 0);
    // A late row names its cause beside its status, and its split adds up to
    // about its latency; the cause of the recent misses moves off admission.
    page.wait_for(
        "a late row with its cause and split",
        "[...document.querySelectorAll('#events tr.st-late')].some((tr) => { \
           const status = tr.querySelector('td.status').textContent; \
           const parts = tr.querySelector('td.c-split').textContent.split(' / ').map(Number); \
           const latency = parseFloat(tr.cells[6].textContent); \
           return /^late · (queue wait|work|credit wait)$/.test(status) && parts.length === 3 \
             && parts.every(Number.isFinite) && Math.abs(parts[0] + parts[1] + parts[2] - latency) < 3; })",
    )?;
    page.wait_for(
        "the generator's misses to be mostly queue wait or work",
        &producer_cause("/^(queue wait|work) \\d+(\\.\\d+)? %$/"),
    )?;
    page.wait_for(
        "a hint about queue wait or work",
        "/^misses are (queue wait|work) \\(/.test(document.getElementById('health-hint').textContent)",
    )?;

    // A bad value is refused with a message, without reaching the server.
    page.eval(
        "(() => { const i = document.getElementById('k-deadline'); i.value = '0'; \
         i.dispatchEvent(new Event('change', { bubbles: true })); return true; })()",
    )?;
    let status = page.text("knobs-status")?;
    assert!(
        status.contains("deadline"),
        "no error shown for deadline 0: {status}"
    );

    // 5,000 events/s: the page keeps drawing frames and stays bounded.
    page.set_knob("k-rate", 5000)?;
    page.wait_for(
        "events/s above 2,000",
        "Number(document.getElementById('s-rate').textContent.replace(/[^0-9]/g, '')) > 2000",
    )?;
    thread::sleep(Duration::from_secs(2));
    // Frames drawn in 2 s, and the longest gap between two. The bar is low
    // because the machine may be busy; a page that updated the DOM per
    // message would manage a frame or two a second here.
    let frames = page.eval_async(
        "new Promise((done) => { let n = 0; const t0 = performance.now(); let last = t0; let worst = 0; \
           const tick = () => { const now = performance.now(); n++; worst = Math.max(worst, now - last); last = now; \
             if (now - t0 < 2000) requestAnimationFrame(tick); else done({ fps: n / 2, worstMs: Math.round(worst) }); }; \
           requestAnimationFrame(tick); })",
    )?;
    eprintln!("at 5,000 events/s: {frames}");
    let fps = frames["fps"].as_f64().unwrap_or(0.0);
    let worst = frames["worstMs"].as_f64().unwrap_or(f64::MAX);
    assert!(
        fps >= 4.0 && worst < 1000.0,
        "the page stalls at 5,000 events/s: {frames}"
    );
    let rows = page.eval("document.querySelectorAll('#events tr').length")?;
    assert_eq!(
        rows.as_u64(),
        Some(50),
        "the table must hold exactly the last 50 rows"
    );

    // Phone width, under load: nothing wider than the screen; the screenshot shows the whole page.
    page.emulate_width(390, 844, true)?;
    thread::sleep(Duration::from_millis(1500));
    let overflow = page.eval("document.documentElement.scrollWidth - window.innerWidth")?;
    assert!(
        overflow.as_i64() <= Some(1),
        "the page scrolls sideways at 390 px: {overflow} px too wide"
    );
    let height = page
        .eval("document.documentElement.scrollHeight")?
        .as_u64()
        .unwrap_or(844);
    page.emulate_width(390, u32::try_from(height.clamp(844, 4000))?, true)?;
    thread::sleep(Duration::from_millis(1000));
    page.screenshot("dashboard-phone.png")?;
    page.emulate_width(1280, 800, false)?;

    // Back to calm, then the 1280×800 screenshot.
    page.set_knob("k-rate", 20)?;
    page.set_knob("k-work", 50)?;
    page.eval("document.getElementById('k-admission').click()")?;
    page.wait_for(
        "admission on to be applied",
        "document.getElementById('knobs-status').textContent.startsWith('applied: admission on')",
    )?;
    thread::sleep(Duration::from_secs(3));
    page.screenshot("dashboard.png")?;

    // The server goes away and comes back on the same port: the page reconnects by itself.
    let top = page.eval("document.querySelector('#events tr').dataset.seq")?;
    let top_id = page.eval("document.querySelector('#events td').title")?;
    stop_within(server.take(), WAIT)?;
    page.wait_for(
        "the page to notice the server is gone",
        "!document.getElementById('connection').classList.contains('live')",
    )?;
    thread::sleep(Duration::from_secs(1));
    server = Running(Some(restart_on(addr, Some(TOKEN))?));
    page.wait_for(
        "the connection to be live again",
        "document.getElementById('connection').classList.contains('live')",
    )?;
    page.wait_for(
        "rows from the new server",
        &format!("document.querySelector('#events td').title !== {top_id}"),
    )?;
    let urls = page.eval("window.__wsUrls")?;
    eprintln!("socket URLs: {urls} (top row before restart: seq {top})");
    let urls: Vec<&str> = urls
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(urls.len() >= 2, "no reconnect attempt recorded: {urls:?}");
    assert!(
        urls[0].ends_with("/ws?stats=1"),
        "first connection: {}",
        urls[0]
    );
    // A resume names its run: the epoch from the hello, and the last seq seen in it.
    let resumed = urls[1..]
        .iter()
        .all(|u| u.contains("/ws?stats=1&epoch=") && u.contains("&since="));
    assert!(
        resumed,
        "reconnects must pass epoch=<run>&since=<last seq>: {urls:?}"
    );
    page.wait_count_above("s-on-time", 0)?;

    // The new server wants a token for changes. A second page, in a fresh
    // browser context (its own connection pool: the first page's kept-alive
    // HTTP connections still lead to the stopped server), asks for it once,
    // keeps it for the session, and shows the server's error when it is wrong.
    let context = browser.new_context()?;
    let second = Dashboard::open(context.new_tab()?, url)?;
    second.wait_for(
        "the second page to be live",
        "document.getElementById('connection').classList.contains('live')",
    )?;
    second.wait_for(
        "the token badge",
        "!document.getElementById('knobs-lock').hidden",
    )?;
    second.type_knob("k-work", 60)?;
    let message = second.wait_for_dialog(1)?;
    assert!(
        message.contains("token"),
        "the prompt does not ask for a token: {message}"
    );
    second
        .tab
        .get_dialog()
        .accept(Some("not-the-token".into()))?;
    let status = second.knob_answer()?;
    assert!(
        status.contains("not authorised") && status.contains("token"),
        "a refused token must show the server's error: {status}"
    );
    second.type_knob("k-work", 60)?;
    second.wait_for_dialog(2)?;
    second.tab.get_dialog().accept(Some(TOKEN.into()))?;
    let status = second.knob_answer()?;
    assert!(
        status.starts_with("applied"),
        "the right token was not accepted: {status}"
    );
    second.set_knob("k-work", 55)?;
    let prompts = second
        .reports
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .dialogs
        .len();
    assert_eq!(prompts, 2, "a stored token must not be asked for again");
    let stored = second.eval("sessionStorage.getItem('punctual.token')")?;
    assert_eq!(stored, Value::String(TOKEN.into()));

    // No errors from either page at any point.
    for (name, p) in [("first", &page), ("second", &second)] {
        let page_errors = p.eval("window.__errors")?;
        assert_eq!(
            page_errors,
            Value::Array(vec![]),
            "errors in the {name} page"
        );
        let reports = p.reports.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!(
            "{name} page: {} failed connection attempts while the server was down, {} token challenges",
            reports.socket_failures.len(),
            reports.auth_challenges
        );
        assert!(
            reports.errors.is_empty(),
            "the browser reported errors in the {name} page: {:#?}",
            reports.errors
        );
    }
    stop_within(server.take(), WAIT)?;
    Ok(())
}

/// An edge's dashboard while the Redis behind it is away: the health panel
/// says degraded and names Redis, the outcomes already shown stay, and it
/// says healthy again once Redis is back.
#[test]
fn an_edges_dashboard_shows_a_lost_redis_as_degraded_and_then_recovered() -> TestResult {
    let Some(chromium) = installed_chromium()? else {
        return Ok(());
    };
    let Some(mut redis) = crate::cluster::Redis::start() else {
        return Ok(());
    };
    let _processor = crate::cluster::processor(&redis, &[]);
    let edge = crate::cluster::edge(&redis);
    crate::cluster::wait_for_feed(edge.addr);

    let profile = TempProfile::new()?;
    let browser = launch(&chromium, &profile.0)?;
    let page = Dashboard::open(browser.new_tab()?, &format!("http://{}/", edge.addr))?;
    page.wait_count_above("s-on-time", 0)?;
    page.wait_for(
        "health to say healthy",
        "document.getElementById('health-state').textContent === 'healthy'",
    )?;

    redis.kill();
    page.wait_for(
        "health to say degraded, naming Redis",
        "document.getElementById('health-state').textContent === 'degraded' \
         && /redis/i.test(document.getElementById('health-reasons').textContent)",
    )?;
    let reasons = page.text("health-reasons")?;
    eprintln!("  degraded: {reasons}");
    assert!(
        page.count("s-on-time")? > 0,
        "the outcomes already shown stay: {}",
        page.describe()
    );
    page.screenshot("dashboard-degraded-edge.png")?;

    redis.restart_after(Duration::ZERO);
    page.wait_for(
        "health to say healthy again",
        "document.getElementById('health-state').textContent === 'healthy'",
    )?;
    let errors = page.eval("window.__errors")?;
    assert_eq!(errors, Value::Array(vec![]), "the page reported errors");
    Ok(())
}

#[test]
fn dashboard_logic_passes_its_javascript_unit_tests() -> TestResult {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/logic.test.mjs");
    let output = match Command::new("node").arg("--test").arg(&tests).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // .ci/run installs node: there a missing one is a failure.
            if std::env::var_os("CI").is_some() {
                return Err("node not found, and CI is set: apt-get install nodejs".into());
            }
            println!("skipped: no node");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node --test failed:\n{stdout}\n{stderr}"
    );
    Ok(())
}

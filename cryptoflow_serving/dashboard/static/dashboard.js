// The CryptoFlow dashboard: reads only the market-data API (docs/api.md), REST for history and WS /v1/live for what is
// committed from now on. No build step and no framework: one file the API serves as it is (ADR 0021).
(function () {
  "use strict";

  const BAR_LIMIT = 720;            // 12 hours of 1-minute bars on first load
  const PREMIUM_LIMIT = 1440;       // a day of 1-minute premium points
  const SMA_N = 20, EMA_N = 12, RSI_N = 14;
  // REST refreshes: what the live feed does not push (24h stats, health, premium), and alerts as a backstop for a
  // feed that was down (the feed starts from now, without replay)
  const STATS_EVERY_MS = 10000, HEALTH_EVERY_MS = 5000, PREMIUM_EVERY_MS = 30000, ALERTS_EVERY_MS = 60000;
  const STALE_LAG_S = 120;          // a table whose latest row is older than this is marked stale
  const ALERTS_SHOWN = 200;
  const I = window.CryptoflowIndicators;
  const LWC = window.LightweightCharts;

  // What the page drew, for people debugging and for tests/test_dashboard_browser.py (which compares it with the lake).
  const state = {
    markets: [], selected: null, bars: [], forming: null, indicators: { sma: [], ema: [], rsi: [] },
    volatility: [], premium: [], stats: new Map(), alerts: [], health: null,
    live: { market: { state: "connecting", messages: 0, closes: [] }, all: { state: "connecting", messages: 0, closes: [] } },
    counts: { trade: 0, bar: 0, alert: 0 }, lastMessageAt: null, firstChartAt: null, errors: [],
  };
  window.cryptoflowDashboard = { state, indicators: I };

  // ---- the API ------------------------------------------------------------------------------------------------------
  let apiKey = sessionStorage.getItem("cryptoflow_api_key") || "";

  async function api(path, params) {
    const url = new URL(path, location.origin);
    for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null) url.searchParams.set(k, v);
    const headers = apiKey ? { "X-API-Key": apiKey } : {};
    const response = await fetch(url, { headers });
    if (response.status === 401) {
      document.getElementById("key-form").hidden = false;  // keys are required: ask once, keep for the tab only
      throw new Error("the API needs a key");
    }
    const body = await response.json();
    if (!response.ok) {
      const error = new Error(`${path}: ${body.error || response.status}: ${body.message || ""}`);
      error.status = response.status;
      error.body = body;
      throw error;
    }
    return body;
  }

  function report(where, error) {
    state.errors.push(`${where}: ${error.message}`);
    if (state.errors.length > 50) state.errors.shift();
    console.warn(where, error);
  }

  const seconds = (iso) => Math.floor(Date.parse(iso) / 1000);
  const [exchangeOf, marketOf] = [(key) => key.split(":")[0], (key) => key.slice(key.indexOf(":") + 1)];
  const keyOf = (row) => `${row.exchange}:${row.market}`;

  // The asset a market trades, for the premium: Upbit's KRW-BTC and Binance's BTCUSDT are both BTC.
  function assetOf(key) {
    const market = marketOf(key);
    if (exchangeOf(key) === "upbit") return market.split("-")[1];
    return market.replace(/(USDT|USDC|BUSD|BTC)$/, "");
  }

  // ---- charts ---------------------------------------------------------------------------------------------------------
  const chartOptions = {
    layout: { background: { color: "#171b24" }, textColor: "#d8dde8" },
    grid: { vertLines: { color: "#222836" }, horzLines: { color: "#222836" } },
    timeScale: { timeVisible: true, secondsVisible: false },
    autoSize: true,
  };
  const candleChart = LWC.createChart(document.getElementById("candles"), chartOptions);
  const candles = candleChart.addSeries(LWC.CandlestickSeries, {
    upColor: "#26a69a", downColor: "#ef5350", borderVisible: false, wickUpColor: "#26a69a", wickDownColor: "#ef5350",
  });
  const smaLine = candleChart.addSeries(LWC.LineSeries, { color: "#f5a623", lineWidth: 1, priceLineVisible: false });
  const emaLine = candleChart.addSeries(LWC.LineSeries, { color: "#4aa3ff", lineWidth: 1, priceLineVisible: false });
  const rsiLine = candleChart.addSeries(LWC.LineSeries, { color: "#c77dff", lineWidth: 1, priceLineVisible: false }, 1);
  rsiLine.createPriceLine({ price: 70, color: "#555", lineStyle: LWC.LineStyle.Dashed, axisLabelVisible: false });
  rsiLine.createPriceLine({ price: 30, color: "#555", lineStyle: LWC.LineStyle.Dashed, axisLabelVisible: false });
  candleChart.panes()[1].setHeight(110);

  const volChart = LWC.createChart(document.getElementById("volatility"), chartOptions);
  const ESTIMATORS = {
    close_to_close: "#d8dde8", parkinson: "#f5a623", garman_klass: "#4aa3ff", rogers_satchell: "#26a69a",
    yang_zhang: "#c77dff",
  };
  const volLines = Object.fromEntries(Object.entries(ESTIMATORS).map(([name, color]) =>
    [name, volChart.addSeries(LWC.LineSeries, { color, lineWidth: 1, title: name, priceLineVisible: false,
      priceFormat: { type: "percent" } })]));

  const premiumChart = LWC.createChart(document.getElementById("premium"), chartOptions);
  const premiumLine = premiumChart.addSeries(LWC.AreaSeries, {
    lineColor: "#4aa3ff", topColor: "rgba(74,163,255,0.3)", bottomColor: "rgba(74,163,255,0.02)", lineWidth: 1,
    priceFormat: { type: "custom", formatter: (v) => v.toFixed(2) + " %" },
  });

  // the drawn series themselves (series.data() is what the canvas shows), for tests and debugging
  window.cryptoflowDashboard.series = {
    candles, sma: smaLine, ema: emaLine, rsi: rsiLine, volatility: volLines, premium: premiumLine,
  };

  function lineData(bars, values) {
    // a whitespace point where the indicator has no value yet keeps the lines aligned with the candles
    return bars.map((b, i) => (values[i] === null ? { time: b.time } : { time: b.time, value: values[i] }));
  }

  function drawIndicators() {
    const closes = state.bars.map((b) => b.close);
    state.indicators = { sma: I.sma(closes, SMA_N), ema: I.ema(closes, EMA_N), rsi: I.rsi(closes, RSI_N) };
    smaLine.setData(lineData(state.bars, state.indicators.sma));
    emaLine.setData(lineData(state.bars, state.indicators.ema));
    rsiLine.setData(lineData(state.bars, state.indicators.rsi));
  }

  function drawCandles() {
    const shown = state.forming ? [...state.bars, state.forming] : state.bars;
    candles.setData(shown);
    drawIndicators();
    const el = document.getElementById("candles");
    el.dataset.bars = String(state.bars.length);
    el.dataset.lastTs = state.bars.length ? String(state.bars[state.bars.length - 1].time) : "";
    if (state.bars.length && state.firstChartAt === null) {
      // the frame after setData is when the canvas shows the bars
      requestAnimationFrame(() => {
        state.firstChartAt = performance.now();
        document.body.dataset.firstChart = String(Math.round(state.firstChartAt));
      });
    }
  }

  const toBar = (row) => ({ time: seconds(row.ts), open: row.open, high: row.high, low: row.low, close: row.close });

  // A closed bar from the live feed: appended, or replacing the same minute (the API re-sends a corrected bar).
  function applyBar(row) {
    const bar = toBar(row);
    const bars = state.bars;
    const last = bars.length ? bars[bars.length - 1].time : -Infinity;
    if (bar.time > last) bars.push(bar);
    else {
      const i = bars.findIndex((b) => b.time === bar.time);
      if (i >= 0) bars[i] = bar;
      else { bars.push(bar); bars.sort((a, b) => a.time - b.time); }
    }
    if (bars.length > BAR_LIMIT * 2) bars.splice(0, bars.length - BAR_LIMIT);
    if (state.forming && state.forming.time <= bar.time) state.forming = null;
    drawCandles();
  }

  // A trade of the selected market moves the minute still forming (drawn, never used for the indicators: TA-Lib's
  // values are over closed bars, as the lake's are).
  function applyTrade(row) {
    const minute = Math.floor(seconds(row.ts) / 60) * 60;
    const last = state.bars.length ? state.bars[state.bars.length - 1].time : -Infinity;
    if (minute <= last) return;
    const f = state.forming;
    if (!f || f.time !== minute) state.forming = { time: minute, open: row.price, high: row.price, low: row.price, close: row.price };
    else Object.assign(f, { high: Math.max(f.high, row.price), low: Math.min(f.low, row.price), close: row.price });
    candles.update({ ...state.forming });
  }

  // ---- panels ---------------------------------------------------------------------------------------------------------
  async function loadBars() {
    const key = state.selected;
    const body = await api("/v1/bars/1m", { exchange: exchangeOf(key), market: marketOf(key), order: "desc", limit: BAR_LIMIT });
    if (key !== state.selected) return;
    state.bars = body.data.map(toBar).reverse();
    state.forming = null;
    // The table also holds the minute still trading (refreshed with every commit): it is drawn as forming, and the
    // indicators stay over closed minutes; its closed version comes from the feed.
    const last = state.bars[state.bars.length - 1];
    if (last && last.time + 60 > Date.now() / 1000) state.forming = state.bars.pop();
    document.getElementById("candles-title").textContent = `${key} (snapshot ${body.snapshot})`;
    const ref = state.bars.length ? state.bars[state.bars.length - 1].close : 1;
    const precision = ref >= 1000 ? 0 : ref >= 1 ? 2 : 6;  // KRW prices in won, USDT in cents, small coins finer
    const priceFormat = { type: "price", precision, minMove: 10 ** -precision };
    for (const series of [candles, smaLine, emaLine]) series.applyOptions({ priceFormat });
    drawCandles();
    candleChart.timeScale().fitContent();
  }

  async function loadVolatility() {
    const key = state.selected;
    const body = await api("/v1/volatility/daily", { exchange: exchangeOf(key), market: marketOf(key), limit: 1000 });
    if (key !== state.selected) return;
    state.volatility = body.data;
    for (const [name, line] of Object.entries(volLines)) {
      // a daily sigma as a fraction: the percent format shows 0.012 as 1.20 %
      line.setData(body.data.map((r) => (r[name] === null ? { time: r.day } : { time: r.day, value: r[name] * 100 })));
    }
    volChart.timeScale().fitContent();
    document.getElementById("volatility").dataset.days = String(body.data.length);
  }

  async function loadPremium() {
    const asset = assetOf(state.selected);
    const body = await api("/v1/kimchi-premium", { asset, order: "desc", limit: PREMIUM_LIMIT });
    if (asset !== assetOf(state.selected)) return;
    state.premium = body.data.slice().reverse();
    premiumLine.setData(state.premium.filter((r) => r.premium_pct !== null)
      .map((r) => ({ time: seconds(r.ts), value: r.premium_pct })));
    const last = state.premium[state.premium.length - 1];
    document.getElementById("premium-title").textContent =
      `${asset}: ${last ? last.premium_pct.toFixed(2) + " % at " + last.ts.slice(11, 16) + " UTC" : "no data yet"}`;
    document.getElementById("premium").dataset.points = String(state.premium.length);
  }

  function fmt(v, digits) {
    if (v === null || v === undefined) return "";
    const abs = Math.abs(v);
    const d = digits !== undefined ? digits : abs >= 1000 ? 0 : abs >= 1 ? 2 : 6;
    return v.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  }

  function renderStats() {
    const tbody = document.querySelector("#stats tbody");
    const rows = [...state.stats.values()].sort((a, b) => keyOf(a).localeCompare(keyOf(b)));
    tbody.replaceChildren(...rows.map((r) => {
      const tr = document.createElement("tr");
      tr.dataset.market = keyOf(r);
      const cells = [r.exchange, r.market, fmt(r.last_price), fmt(r.change_pct, 2), fmt(r.high_24h), fmt(r.low_24h),
        fmt(r.volume_24h, 4), fmt(r.vwap_24h), fmt(r.trade_count_24h, 0), (r.as_of || "").slice(11, 19)];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === 2) td.className = "last";
        if (i === 3) td.className = r.change_pct >= 0 ? "up" : "down";
        tr.appendChild(td);
      });
      return tr;
    }));
  }

  async function loadStats() {
    const body = await api("/v1/stats/24h", {});
    for (const row of body.data) {
      const live = state.stats.get(keyOf(row));
      // a live price newer than the table's as_of wins: the table refreshes with the next streaming commit
      if (live && live.live_ts && live.live_ts > seconds(row.as_of)) row.last_price = live.last_price, row.live_ts = live.live_ts;
      state.stats.set(keyOf(row), row);
    }
    renderStats();
  }

  function liveLastPrice(exchange, market, price, ts) {
    const row = state.stats.get(`${exchange}:${market}`);
    if (!row) return;
    row.last_price = price;
    row.live_ts = ts;
    const cell = document.querySelector(`#stats tr[data-market="${CSS.escape(exchange + ":" + market)}"] td.last`);
    if (cell) cell.textContent = fmt(price);
  }

  function alertItem(a, isNew) {
    const li = document.createElement("li");
    li.dataset.alertId = String(a.alert_id);
    li.dataset.source = isNew ? "live" : "rest";
    li.dataset.rule = a.rule;
    li.dataset.market = a.market ? `${a.exchange}:${a.market}` : "";
    li.dataset.shownAt = String(Date.now());  // wall clock, for benchmarks/dashboard.py's shock -> visible figure
    if (isNew) li.className = "new";
    const time = document.createElement("time");
    time.dateTime = a.triggered_at;
    time.textContent = (a.triggered_at || "").replace("T", " ").slice(0, 19);
    const rule = document.createElement("span");
    rule.className = "rule";
    rule.textContent = a.rule;
    li.append(time, rule, document.createTextNode(a.message || ""));
    return li;
  }

  function addAlerts(rows, isNew) {
    const list = document.getElementById("alerts");
    const known = new Set(state.alerts.map((a) => a.alert_id));
    const fresh = rows.filter((a) => !known.has(a.alert_id));
    if (!fresh.length) return;
    state.alerts = [...fresh, ...state.alerts].sort((a, b) => Date.parse(b.triggered_at) - Date.parse(a.triggered_at))
      .slice(0, ALERTS_SHOWN);
    list.replaceChildren(...state.alerts.map((a) => {
      const old = list.querySelector(`li[data-alert-id="${CSS.escape(String(a.alert_id))}"]`);
      return old || alertItem(a, isNew);
    }));
  }

  async function loadAlerts() {
    const body = await api("/v1/alerts", { order: "desc", limit: ALERTS_SHOWN });
    addAlerts(body.data, false);
  }

  const STAGES = ["bronze", "silver", "gold", "ops"];

  function lagText(lag) {
    if (lag === null || lag === undefined) return "";
    if (lag < 120) return `${lag.toFixed(1)} s`;
    if (lag < 7200) return `${(lag / 60).toFixed(1)} min`;
    if (lag < 172800) return `${(lag / 3600).toFixed(1)} h`;
    return `${(lag / 86400).toFixed(1)} d`;
  }

  async function loadHealth() {
    const body = await api("/v1/health", {});
    state.health = body;
    const rows = (body.tables || []).slice().sort((a, b) =>
      STAGES.indexOf(a.table.split(".")[0]) - STAGES.indexOf(b.table.split(".")[0]) || a.table.localeCompare(b.table));
    const liveAge = state.lastMessageAt === null ? null : (Date.now() - state.lastMessageAt) / 1000;
    const trs = rows.map((t) => {
      const tr = document.createElement("tr");
      tr.dataset.table = t.table;
      if (!t.exists || (t.lag_s !== null && t.lag_s > STALE_LAG_S)) tr.className = "stale";
      const lag = document.createElement("td");
      lag.className = "lag";
      lag.textContent = t.exists ? lagText(t.lag_s) : "not built";
      const cells = [t.table.split(".")[0], t.table, (t.latest || "").replace("T", " ").slice(0, 19)].map((text) => {
        const td = document.createElement("td");
        td.textContent = text;
        return td;
      });
      tr.append(...cells, lag);
      return tr;
    });
    const live = document.createElement("tr");
    live.dataset.table = "live";
    live.innerHTML = "<td>live</td><td>WS /v1/live</td><td></td><td class='lag'></td>";
    live.children[2].textContent = state.lastMessageAt ? new Date(state.lastMessageAt).toISOString().slice(0, 19).replace("T", " ") : "";
    live.children[3].textContent = liveAge === null ? "no message yet" : `${liveAge.toFixed(1)} s ago`;
    document.querySelector("#freshness tbody").replaceChildren(...trs, live);
    const ingest = body.ingest || {}, gaps = body.gaps || {}, alerts = body.alerts || {};
    document.getElementById("freshness-notes").textContent =
      `last file ingested ${(ingest.last_file_ingested_at || "never").replace("T", " ").slice(0, 19)}; ` +
      `${ingest.files_last_hour ?? 0} files in the last hour; open gaps ${gaps.open ?? 0}; ` +
      `alerts pending ${alerts.pending ?? 0}, failed ${alerts.failed ?? 0}; snapshot ${body.snapshot}`;
    document.getElementById("snapshot").textContent = `lake snapshot ${body.snapshot}`;
  }

  // ---- live ---------------------------------------------------------------------------------------------------------
  // Two subscriptions: the selected market's trades and bars (re-subscribed when the market changes) and every
  // market's bars and alerts. Every market's trades in one tab would be the whole firehose (the API closes a client
  // 1,000 messages behind), and the page needs only one market's.
  class LiveSocket {
    constructor(name, subscription) {
      this.name = name;
      this.subscription = subscription;
      this.retryMs = 500;
      this.connect();
    }

    connect() {
      const url = new URL("/v1/live", location.origin);
      url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
      this.ws = new WebSocket(url);
      this.setState("connecting");
      this.ws.onopen = () => { this.retryMs = 500; this.send(); };
      this.ws.onmessage = (event) => this.receive(JSON.parse(event.data));
      this.ws.onclose = (event) => {
        const closes = state.live[this.name].closes;
        closes.push({ at: Date.now(), code: event.code, reason: event.reason });
        if (closes.length > 20) closes.shift();
        this.setState("closed", `${event.code} ${event.reason}`);
        if (event.code === 4001) document.getElementById("key-form").hidden = false;
        // after a gap (restart, slow-consumer 4008) the REST endpoints fill what was missed, then the feed resumes
        setTimeout(() => { this.connect(); refreshAfterGap(); }, this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, 10000);
      };
    }

    send() {
      if (this.ws.readyState !== WebSocket.OPEN) return;
      this.ws.send(JSON.stringify({ subscribe: this.subscription(), ...(apiKey ? { api_key: apiKey } : {}) }));
    }

    setState(value, detail) {
      state.live[this.name].state = value;
      const states = Object.values(state.live).map((s) => s.state);
      const overall = states.every((s) => s === "open") ? "open" : states.includes("closed") ? "closed" : "connecting";
      const el = document.getElementById("live-status");
      el.dataset.state = overall;
      el.textContent = `live: ${overall}` + (detail && overall !== "open" ? ` (${detail})` : "");
    }

    receive(msg) {
      state.live[this.name].messages++;
      state.lastMessageAt = Date.now();
      if (msg.type === "subscribed") this.setState("open");
      else if (msg.type === "error") report(`live ${this.name}`, new Error(msg.message));
      else if (msg.type === "skipped") {  // a burst the feed did not push (a backfill): read it over REST
        state.live[this.name].skipped = (state.live[this.name].skipped || 0) + 1;
        refreshAfterGap();
      }
      else onLive(this.name, msg);
    }
  }

  function onLive(socket, msg) {
    const key = msg.exchange ? `${msg.exchange}:${msg.market}` : null;
    if (msg.type === "trade" && socket === "market") {
      state.counts.trade++;
      if (key === state.selected) applyTrade(msg);
      liveLastPrice(msg.exchange, msg.market, msg.price, seconds(msg.ts));
    } else if (msg.type === "bar") {
      if (socket === "market" && key === state.selected) { state.counts.bar++; applyBar(msg); }
      if (socket === "all" && key !== state.selected) liveLastPrice(msg.exchange, msg.market, msg.close, seconds(msg.ts) + 60);
    } else if (msg.type === "alert" && socket === "all") {
      state.counts.alert++;
      addAlerts([msg], true);
    }
  }

  let gapRefresh = null;
  function refreshAfterGap() {
    clearTimeout(gapRefresh);
    gapRefresh = setTimeout(() => { guarded("bars", loadBars); guarded("alerts", loadAlerts); }, 1000);
  }

  // ---- wiring -------------------------------------------------------------------------------------------------------
  async function guarded(where, fn) {
    try { await fn(); } catch (error) { report(where, error); }
  }

  function every(ms, where, fn) {
    guarded(where, fn);
    setInterval(() => { if (!document.hidden) guarded(where, fn); }, ms);
  }

  let sockets = null;

  async function selectMarket(key) {
    state.selected = key;
    document.getElementById("market").value = key;
    if (location.hash.slice(1) !== key) history.replaceState(null, "", "#" + key);
    if (sockets) sockets.market.send();
    await Promise.all([guarded("bars", loadBars), guarded("volatility", loadVolatility), guarded("premium", loadPremium)]);
  }

  async function start() {
    const body = await api("/v1/markets", {});
    state.markets = body.data.map(keyOf).sort();
    if (!state.markets.length) throw new Error("no market in the lake yet");
    const select = document.getElementById("market");
    select.replaceChildren(...state.markets.map((key) => new Option(key, key)));
    select.onchange = () => selectMarket(select.value);
    const wanted = decodeURIComponent(location.hash.slice(1));
    const first = state.markets.includes(wanted) ? wanted : state.markets.includes("upbit:KRW-BTC") ? "upbit:KRW-BTC" : state.markets[0];
    sockets = {
      market: new LiveSocket("market", () => ({ markets: state.selected ? [state.selected] : [], channels: ["trades", "bars"] })),
      all: new LiveSocket("all", () => ({ markets: ["*"], channels: ["bars", "alerts"] })),
    };
    if (first) await selectMarket(first);
    every(STATS_EVERY_MS, "stats", loadStats);
    every(HEALTH_EVERY_MS, "health", loadHealth);
    every(PREMIUM_EVERY_MS, "premium", loadPremium);
    every(ALERTS_EVERY_MS, "alerts", loadAlerts);
    document.body.dataset.ready = "1";
  }

  document.getElementById("key-form").onsubmit = (event) => {
    event.preventDefault();
    apiKey = document.getElementById("api-key").value.trim();
    sessionStorage.setItem("cryptoflow_api_key", apiKey);
    location.reload();
  };
  window.addEventListener("hashchange", () => {
    const key = decodeURIComponent(location.hash.slice(1));
    if (state.markets.includes(key) && key !== state.selected) selectMarket(key);
  });

  window.cryptoflowDashboard.started = start().catch((error) => {
    report("start", error);
    // no market yet (an empty lake): try again shortly rather than leave a dead page
    setTimeout(() => location.reload(), 5000);
  });
})();

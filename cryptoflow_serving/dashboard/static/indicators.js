// SMA, EMA and RSI over 1-minute closes, computed in the page with TA-Lib's conventions (docs/architecture.md, Formulas):
// the daily ones come from gold.indicators_daily, but nothing in the lake holds them per minute, and a closed bar arriving
// on the live feed must move the lines at once. Outputs are arrays as long as the input, null where TA-Lib has no value
// yet (its lookback), so index i belongs to bar i. tests/test_dashboard_browser.py checks these numbers against talib.
(function (root) {
  "use strict";

  // SMA(n): the mean of the last n values; the first value at index n - 1.
  function sma(values, n) {
    const out = new Array(values.length).fill(null);
    let sum = 0;
    for (let i = 0; i < values.length; i++) {
      sum += values[i];
      if (i >= n) sum -= values[i - n];
      if (i >= n - 1) out[i] = sum / n;
    }
    return out;
  }

  // EMA(n): k = 2 / (n + 1), seeded with the SMA of the first n values (TA-Lib's default), first value at index n - 1.
  function ema(values, n) {
    const out = new Array(values.length).fill(null);
    if (values.length < n) return out;
    const k = 2 / (n + 1);
    let prev = 0;
    for (let i = 0; i < n; i++) prev += values[i];
    prev /= n;
    out[n - 1] = prev;
    for (let i = n; i < values.length; i++) {
      prev = (values[i] - prev) * k + prev;
      out[i] = prev;
    }
    return out;
  }

  // RSI(n) with Wilder smoothing: the first averages are plain means of the first n gains and losses, then
  // avg = (avg * (n - 1) + current) / n; first value at index n. A window with no movement at all is 0, as in TA-Lib.
  function rsi(values, n) {
    const out = new Array(values.length).fill(null);
    if (values.length <= n) return out;
    let gain = 0, loss = 0;
    for (let i = 1; i <= n; i++) {
      const d = values[i] - values[i - 1];
      if (d > 0) gain += d; else loss -= d;
    }
    gain /= n;
    loss /= n;
    const value = () => (gain + loss === 0 ? 0 : (100 * gain) / (gain + loss));
    out[n] = value();
    for (let i = n + 1; i < values.length; i++) {
      const d = values[i] - values[i - 1];
      gain = (gain * (n - 1) + (d > 0 ? d : 0)) / n;
      loss = (loss * (n - 1) + (d < 0 ? -d : 0)) / n;
      out[i] = value();
    }
    return out;
  }

  const api = { sma, ema, rsi };
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.CryptoflowIndicators = api;
})(typeof self !== "undefined" ? self : this);

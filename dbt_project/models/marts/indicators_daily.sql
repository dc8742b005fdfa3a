{#- Daily technical indicators with TA-Lib's conventions, equal to TA-Lib's output (tests compare bar by bar):
    - sma_<n>: mean of the last n closes, null until n bars exist.
    - ema_<n>: seeded with the SMA of the first n closes (on bar n), then ((close - prev) * k) + prev, k = 2 / (n + 1).
    - rsi / atr: Wilder smoothing (prev * (n-1) + x) / n, seeded on bar n+1 with the mean of the first n gains/losses
      or true ranges (bar 1 has no previous close, so it contributes none). rsi = 100 * gain / (gain + loss); TA-Lib
      answers 0 when both are 0 (a flat market) and so do we. (TA-Lib treats |gain + loss| < 1e-8 as 0; we test
      exact 0, so that markets priced in tiny units keep their RSI.)
    - macd / macd_signal: TA-Lib's TA_MACD, which is NOT ema_fast - ema_slow of the standalone EMAs: it seeds the fast
      EMA with the SMA of the `fast` closes ending on the slow EMA's seed bar (bar `slow`), so both EMAs start on the
      same bar; macd = fast - slow from there, the signal is the EMA(signal) of macd seeded with the mean of its first
      `signal` values (on bar slow + signal - 1). Like TA-Lib, both are null before that bar.
    - cross: golden_cross when sma_short rises above sma_long (<= on the previous bar, > now), dead_cross when it
      falls below (>= before, < now), else null.
    The recursive indicators run in one recursive CTE that walks every series a bar at a time (one step = one bar of
    all markets at once); window functions cannot express a recursion whose seed is itself a window. -#}
{#- The recursion takes one step per bar over all series at once; each step is tiny, so a second DuckDB thread only
    adds synchronisation (measured: CPU time doubled). Other models keep the connection's threads. -#}
{{ config(pre_hook="SET threads = 1", post_hook="RESET threads") }}
{{ require_period('macd_fast', 2) }}{{ require_period('macd_slow', 2) }}{{ require_period('macd_signal', 1) }}
{{ require_period('rsi_period', 2) }}{{ require_period('atr_period', 2) }}
{{ require_period('cross_short_window', 1) }}{{ require_period('cross_long_window', 1) }}
{%- set sma_windows = var('indicator_sma_windows') -%}
{%- set ema_periods = var('indicator_ema_periods') -%}
{%- set fast = [var('macd_fast'), var('macd_slow')] | min -%}
{%- set slow = [var('macd_fast'), var('macd_slow')] | max -%}
{%- set signal = var('macd_signal') -%}
{%- set signal_rn = slow + signal - 1 -%}
{%- set rsi_n = var('rsi_period') -%}
{%- set atr_n = var('atr_period') -%}
{%- set short_n = var('cross_short_window') -%}
{%- set long_n = var('cross_long_window') -%}
{%- set states = [] -%}
{%- for n in ema_periods %}{% do states.append('ema_' ~ n) %}{% endfor -%}
{%- do states.extend(['macd_fast_ema', 'macd_slow_ema', 'macd_sum', 'macd_signal', 'avg_gain', 'avg_loss', 'atr']) -%}
{%- set macd_fast_new = ema_step('macd_fast_ema', 's.close', fast, slow) -%}
{%- set macd_slow_new = ema_step('macd_slow_ema', 's.close', slow, slow) -%}
{%- set macd_new = '((' ~ macd_fast_new ~ ') - (' ~ macd_slow_new ~ '))' -%}
with recursive bars as (
    select
        exchange,
        market,
        day,
        high,
        low,
        close,
        dense_rank() over (order by exchange, market) as series_id,
        row_number() over series as rn,
        lag(close) over series as prev_close
    from {{ ref('stg_silver__candles_1d') }}
    window series as (partition by exchange, market order by day)
),

moves as (
    select
        *,
        -- one integer key per (series, bar): the recursive step's join is then a single-column equality
        series_id * 100000000 + rn as step_key,
        greatest(close - prev_close, 0) as gain,
        greatest(prev_close - close, 0) as loss,
        greatest(high, prev_close) - least(low, prev_close) as true_range
    from bars
),

seeded as materialized (
    select
        *,
        {%- for n in ema_periods %}
        {{ seed_mean('close', n, n) }} as ema_{{ n }}_seed,
        {%- endfor %}
        {{ seed_mean('close', fast, slow) }} as macd_fast_ema_seed,
        {{ seed_mean('close', slow, slow) }} as macd_slow_ema_seed,
        {{ seed_mean('gain', rsi_n, rsi_n + 1) }} as avg_gain_seed,
        {{ seed_mean('loss', rsi_n, rsi_n + 1) }} as avg_loss_seed,
        {{ seed_mean('true_range', atr_n, atr_n + 1) }} as atr_seed
    from moves
),

smoothed as (
    select
        step_key,
        rn,
        {%- for n in ema_periods %}
        ema_{{ n }}_seed as ema_{{ n }},
        {%- endfor %}
        macd_fast_ema_seed as macd_fast_ema,
        macd_slow_ema_seed as macd_slow_ema,
        cast(null as double) as macd_sum,
        cast(null as double) as macd_signal,
        avg_gain_seed as avg_gain,
        avg_loss_seed as avg_loss,
        atr_seed as atr
    from seeded
    where rn = 1

    union all

    select
        s.step_key,
        s.rn,
        {%- for n in ema_periods %}
        {{ ema_step('ema_' ~ n, 's.close', n, n) }},
        {%- endfor %}
        {{ macd_fast_new }},
        {{ macd_slow_new }},
        -- running sum of macd from bar `slow` on: its mean over the first `signal` values seeds the signal EMA
        case when s.rn < {{ slow }} then null
             when s.rn = {{ slow }} then {{ macd_new }}
             else p.macd_sum + {{ macd_new }} end,
        case when s.rn < {{ signal_rn }} then null
             when s.rn = {{ signal_rn }} then ({{ 'p.macd_sum + ' if signal > 1 else '' }}{{ macd_new }}) / {{ signal }}
             else (({{ macd_new }} - p.macd_signal) * (2.0 / ({{ signal }} + 1))) + p.macd_signal end,
        {{ wilder_step('avg_gain', 's.gain', rsi_n, rsi_n + 1) }},
        {{ wilder_step('avg_loss', 's.loss', rsi_n, rsi_n + 1) }},
        {{ wilder_step('atr', 's.true_range', atr_n, atr_n + 1) }}
    from smoothed as p
    inner join seeded as s on s.step_key = p.step_key + 1
),

simple_averages as (
    select
        {%- for n in (sma_windows + [short_n, long_n]) | unique %}
        case when rn >= {{ n }} then avg(close) over (
            partition by series_id order by rn rows between {{ n - 1 }} preceding and current row) end as sma_{{ n }},
        {%- endfor %}
        step_key
    from moves
),

indicators as (
    select
        moves.exchange,
        moves.market,
        moves.day,
        moves.close,
        {%- for n in sma_windows %}
        simple_averages.sma_{{ n }},
        {%- endfor %}
        {%- for n in ema_periods %}
        smoothed.ema_{{ n }},
        {%- endfor %}
        case when moves.rn >= {{ signal_rn }} then smoothed.macd_fast_ema - smoothed.macd_slow_ema end as macd,
        smoothed.macd_signal,
        case when smoothed.avg_gain + smoothed.avg_loss = 0 then 0.0
             else 100 * smoothed.avg_gain / (smoothed.avg_gain + smoothed.avg_loss) end as rsi_{{ rsi_n }},
        smoothed.atr as atr_{{ atr_n }},
        simple_averages.sma_{{ short_n }} - simple_averages.sma_{{ long_n }} as cross_spread,
        moves.series_id,
        moves.rn
    from moves
    inner join smoothed using (step_key)
    inner join simple_averages using (step_key)
)

select
    * exclude (cross_spread, series_id, rn),
    case
        when cross_spread > 0 and lag(cross_spread) over bar_order <= 0 then 'golden_cross'
        when cross_spread < 0 and lag(cross_spread) over bar_order >= 0 then 'dead_cross'
    end as cross
from indicators
window bar_order as (partition by series_id order by rn)

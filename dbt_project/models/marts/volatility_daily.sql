{#- A day's 1-minute bars b_1..b_N in time order: every estimator uses b_2..b_N, each with the previous bar's close as
    C_{i-1} (b_1 only supplies C_0, so all five see the same N-1 bars and `bars` = N-1); a gap inside the day just
    makes the previous bar an older one. Daily sigma = sqrt(per-bar variance x bars_per_day), not annualized. -#}
with bars as (
    select
        exchange,
        market,
        day,
        ts,
        open,
        high,
        low,
        close,
        lag(close) over (partition by exchange, market, day order by ts) as prev_close
    from {{ ref('stg_silver__candles_1m') }}
),

terms as (
    select
        exchange,
        market,
        day,
        ts,
        {{ volatility_bar_terms() }}
    from bars
    where prev_close is not null
)

select
    exchange,
    market,
    day,
    {{ volatility_estimates(n='count(*)', scale=var('volatility_bars_per_day'), order=' order by ts') }},
    count(*) as bars
from terms
group by exchange, market, day

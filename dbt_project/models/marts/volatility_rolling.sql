{#- Trailing `window` daily bars ending on `day`, each with the previous daily bar's close as C_{i-1}: a window needs
    window + 1 bars of history, and a (day, window) row exists only once it is full (no partial estimates).
    Windows count bars, not calendar days: a missing day makes the previous bar an older one.
    Annualized: sqrt(per-day variance x days_per_year). One row per window in var('volatility_windows'). -#}
with bars as (
    select
        exchange,
        market,
        day,
        open,
        high,
        low,
        close,
        lag(close) over (partition by exchange, market order by day) as prev_close
    from {{ ref('stg_silver__candles_1d') }}
),

terms as (
    select
        exchange,
        market,
        day,
        {{ volatility_bar_terms() }}
    from bars
    where prev_close is not null
)

{% for window in var('volatility_windows') %}
{%- set frame = "over (partition by exchange, market order by day rows between " ~ (window - 1) ~ " preceding and current row)" %}
{%- if not loop.first %}
union all
{% endif -%}
select * exclude (bars_in_window)
from (
    select
        exchange,
        market,
        day,
        {{ window }} as "window",
        {{ volatility_estimates(n=window, scale=var('volatility_days_per_year'), over=frame) }},
        count(*) {{ frame }} as bars_in_window
    from terms
)
where bars_in_window = {{ window }}
{% endfor %}

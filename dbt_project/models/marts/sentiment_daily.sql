{#- Daily candles with the Fear & Greed index of the same UTC day. A day the index is missing stays null (a left join on
    the exact day, never the nearest value), and return_1d is null unless the previous calendar day has a candle. -#}
with candles as (
    select
        exchange,
        market,
        day,
        close,
        lag(day) over series as prev_day,
        lag(close) over series as prev_close
    from {{ ref('stg_silver__candles_1d') }}
    window series as (partition by exchange, market order by day)
)

select
    candles.exchange,
    candles.market,
    candles.day,
    candles.close,
    case when candles.prev_day = candles.day - 1 then candles.close / candles.prev_close - 1 end as return_1d,
    fear_greed.fear_greed,
    fear_greed.classification
from candles
left join {{ ref('stg_silver__fear_greed') }} as fear_greed
    on fear_greed.day = candles.day

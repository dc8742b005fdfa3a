with source as (
    select * from {{ source('silver', 'candles_1m') }}
),

renamed as (
    select
        exchange,
        market,
        ts,
        -- the UTC calendar day whatever the session's time zone (the contract groups by UTC day)
        cast(timezone('UTC', ts) as date) as day,
        open,
        high,
        low,
        close,
        volume,
        quote_volume
    from source
)

select * from renamed

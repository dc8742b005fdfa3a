with source as (
    select * from {{ source('silver', 'candles_1d') }}
),

renamed as (
    select
        exchange,
        market,
        day,
        open,
        high,
        low,
        close,
        volume,
        quote_volume
    from source
)

select * from renamed

with source as (
    select * from {{ source('silver', 'fear_greed') }}
),

renamed as (
    select
        day,
        value as fear_greed,
        classification
    from source
)

select * from renamed

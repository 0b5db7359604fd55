with

source as (

    select * from {{ source('mailers', 'suppressions') }}

),

renamed as (

    select
        suppression_id,
        -- already lower-cased by the writer; normalized again so grouping by address is exact
        lower(trim(address)) as address,
        scope,
        workspace,
        stream,
        source,
        reason,
        event_id,
        created_at

    from source

)

select * from renamed

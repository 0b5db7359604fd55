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
        created_at,
        -- rows written before removals existed have no action: they are entries
        coalesce(action, 'add') as action,
        actor,
        provider_account,
        origin,
        coalesce(override_complaint, false) as override_complaint,
        control_id

    from source

)

select * from renamed

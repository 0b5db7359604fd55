with

suppressions as (

    select * from {{ ref('stg_mailers__suppressions') }}

),

ranked as (

    select
        *,
        row_number() over (
            partition by address, scope, workspace, stream, source
            order by created_at, suppression_id
        ) as occurrence_number

    from suppressions

),

grouped as (

    select
        address,
        scope,
        workspace,
        stream,
        source,
        min(created_at) as first_seen_at,
        max(created_at) as last_seen_at,
        count(*) as occurrences,
        max(case when occurrence_number = 1 then reason end) as first_reason

    from ranked
    group by
        address,
        scope,
        workspace,
        stream,
        source

),

final as (

    select
        {{ surrogate_key(['address', 'scope', 'workspace', 'stream', 'source']) }} as suppression_key,
        address,
        scope,
        workspace,
        stream,
        source,
        first_seen_at,
        last_seen_at,
        occurrences,
        first_reason

    from grouped

)

select * from final

with

suppressions as (

    select * from {{ ref('stg_mailers__suppressions') }}

),

entries as (

    select * from suppressions
    where action = 'add'

),

removals as (

    select * from suppressions
    where action = 'remove'

),

lifts as (

    -- A removal lifts the entries of its address and exact scope recorded before it; a
    -- complaint entry only when the removal overrides complaints (mailers.suppression).
    select
        entries.suppression_id,
        min(removals.created_at) as lifted_at

    from entries
    inner join removals
        on removals.address = entries.address
        and removals.scope = entries.scope
        and coalesce(removals.workspace, '') = coalesce(entries.workspace, '')
        and coalesce(removals.stream, '') = coalesce(entries.stream, '')
        and removals.created_at > entries.created_at
        and (entries.source != 'complaint' or removals.override_complaint)

    group by entries.suppression_id

),

ranked as (

    select
        entries.*,
        lifts.lifted_at,
        row_number() over (
            partition by entries.address, entries.scope, entries.workspace, entries.stream,
                entries.source
            order by entries.created_at, entries.suppression_id
        ) as occurrence_number

    from entries
    left join lifts on lifts.suppression_id = entries.suppression_id

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
        max(case when occurrence_number = 1 then reason end) as first_reason,
        max(case when occurrence_number = 1 then actor end) as first_added_by,
        max(case when occurrence_number = 1 then coalesce(event_id, origin) end) as first_origin,
        cast(sum(case when lifted_at is null then 1 else 0 end) as {{ dbt.type_bigint() }}) as active_entries,
        min(case when lifted_at is null then created_at end) as active_since,
        max(lifted_at) as last_lifted_at

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
        active_entries > 0 as is_active,
        active_since,
        first_seen_at,
        last_seen_at,
        occurrences,
        occurrences - active_entries as lifted_occurrences,
        last_lifted_at,
        first_reason,
        first_added_by,
        first_origin

    from grouped

)

select * from final

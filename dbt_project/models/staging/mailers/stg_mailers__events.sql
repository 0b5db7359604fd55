with

source as (

    select * from {{ source('mailers', 'events') }}

),

replays as (

    select * from {{ source('mailers', 'event_replays') }}

),

current_rows as (

    -- a replay replaced the rows of an event id ingested before it (mailers.current_events)
    select source.*
    from source
    where not exists (
        select 1 from replays
        where replays.old_event_id = source.event_id
            and replays.replayed_at > source.ingested_at
    )

),

ranked as (

    select
        *,
        -- overlapping landing files can load the same event twice, and a replay appends
        -- an event again after a mapping fix changed it: the latest load wins
        row_number() over (
            partition by event_id
            order by ingested_at desc, source_file desc
        ) as ingestion_rank

    from current_rows

),

deduplicated as (

    select
        event_id,
        event_type,
        bounce_class,
        occurred_at,
        provider,
        provider_account,
        provider_message_id,
        message_key,
        workspace,
        stream,
        campaign,
        recipient,
        sending_domain,
        reason,
        url,
        raw_payload,
        source_file,
        ingested_at

    from ranked
    where ingestion_rank = 1

)

select * from deduplicated

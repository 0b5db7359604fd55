with

source as (

    select * from {{ source('mailers', 'events') }}

),

ranked as (

    select
        *,
        -- overlapping landing files can load the same event twice; the first load wins
        row_number() over (
            partition by event_id
            order by ingested_at, source_file
        ) as ingestion_rank

    from source

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

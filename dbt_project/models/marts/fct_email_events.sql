with

events as (

    select * from {{ ref('stg_mailers__events') }}

),

ledger as (

    select * from {{ ref('stg_mailers__send_ledger') }}

),

messages as (

    select * from {{ ref('int_message_ledger_latest') }}

),

-- a provider message id is unique only within the account that issued it, and an id shared
-- by several messages identifies none of them, so it is left unmatched
provider_message_ids as (

    select
        provider,
        provider_account,
        provider_message_id,
        min(message_key) as message_key

    from ledger
    where provider_message_id is not null
    group by
        provider,
        provider_account,
        provider_message_id
    having count(distinct message_key) = 1

),

matched as (

    select
        events.*,
        coalesce(events.message_key, provider_message_ids.message_key) as resolved_message_key,
        case
            when events.message_key is not null then 'event'
            when provider_message_ids.message_key is not null then 'provider_message_id'
        end as message_key_source

    from events
    left join provider_message_ids
        on events.message_key is null
        and events.provider = provider_message_ids.provider
        and events.provider_account = provider_message_ids.provider_account
        and events.provider_message_id = provider_message_ids.provider_message_id

),

enriched as (

    select
        matched.event_id,
        matched.event_type,
        matched.bounce_class,
        matched.occurred_at,
        cast(matched.occurred_at as date) as event_date,
        matched.resolved_message_key as message_key,
        matched.message_key_source,
        coalesce(matched.workspace, messages.workspace) as workspace,
        coalesce(matched.stream, messages.stream) as stream,
        coalesce(matched.campaign, messages.campaign) as campaign,
        coalesce(matched.recipient, messages.recipient) as recipient,
        coalesce(matched.sending_domain, messages.sending_domain) as sending_domain,
        coalesce(matched.provider, messages.provider) as provider,
        coalesce(matched.provider_account, messages.provider_account) as provider_account,
        coalesce(matched.provider_message_id, messages.provider_message_id) as provider_message_id,
        matched.reason,
        matched.url,
        matched.raw_payload,
        matched.source_file,
        matched.ingested_at

    from matched
    left join messages
        on matched.resolved_message_key = messages.message_key

)

select * from enriched

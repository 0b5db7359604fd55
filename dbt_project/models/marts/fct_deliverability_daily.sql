{%- set dimensions = ['day', 'workspace', 'stream', 'campaign', 'provider', 'provider_account', 'sending_domain'] -%}

with

ledger as (

    select * from {{ ref('stg_mailers__send_ledger') }}

),

email_events as (

    select * from {{ ref('fct_email_events') }}

),

sends as (

    select
        cast(recorded_at as date) as day,
        workspace,
        stream,
        campaign,
        provider,
        provider_account,
        sending_domain,
        message_key as message_ref,
        'sent' as metric

    from ledger
    where status = 'accepted'

),

outcomes as (

    select
        event_date as day,
        workspace,
        stream,
        campaign,
        provider,
        provider_account,
        sending_domain,
        -- an event no message can be found for still counts, once per provider message
        coalesce(
            message_key,
            {{ dbt.concat(["'provider_message_id:'", 'provider_message_id']) }},
            {{ dbt.concat(["'event_id:'", 'event_id']) }}
        ) as message_ref,
        -- a bounce not known to be permanent is counted as soft
        case
            when event_type = 'bounced' and bounce_class = 'hard' then 'hard_bounce'
            when event_type = 'bounced' then 'soft_bounce'
            else event_type
        end as metric

    from email_events
    where event_type in ('delivered', 'deferred', 'bounced', 'complained', 'opened', 'clicked', 'unsubscribed')

),

activity as (

    select * from sends
    union all
    select * from outcomes

),

daily as (

    select
        {%- for dimension in dimensions %}
        {{ dimension }},
        {%- endfor %}
        count(distinct case when metric = 'sent' then message_ref end) as sent,
        count(distinct case when metric = 'delivered' then message_ref end) as delivered,
        count(distinct case when metric = 'deferred' then message_ref end) as deferred,
        count(distinct case when metric = 'hard_bounce' then message_ref end) as hard_bounces,
        count(distinct case when metric = 'soft_bounce' then message_ref end) as soft_bounces,
        count(distinct case when metric = 'complained' then message_ref end) as complaints,
        count(distinct case when metric = 'opened' then message_ref end) as opens,
        count(distinct case when metric = 'clicked' then message_ref end) as clicks,
        count(distinct case when metric = 'unsubscribed' then message_ref end) as unsubscribes

    from activity
    group by
        {%- for dimension in dimensions %}
        {{ dimension }}{% if not loop.last %},{% endif %}
        {%- endfor %}

),

final as (

    select
        {{ surrogate_key(dimensions) }} as deliverability_key,
        {%- for dimension in dimensions %}
        {{ dimension }},
        {%- endfor %}
        sent,
        delivered,
        deferred,
        hard_bounces,
        soft_bounces,
        complaints,
        opens,
        clicks,
        unsubscribes,
        {{ safe_divide('delivered', 'sent') }} as delivery_rate,
        {{ safe_divide('hard_bounces + soft_bounces', 'sent') }} as bounce_rate,
        {{ safe_divide('hard_bounces', 'sent') }} as hard_bounce_rate,
        {{ safe_divide('complaints', 'delivered') }} as complaint_rate,
        {{ safe_divide('opens', 'delivered') }} as open_rate,
        {{ safe_divide('clicks', 'delivered') }} as click_rate,
        {{ safe_divide('unsubscribes', 'delivered') }} as unsubscribe_rate

    from daily

)

select * from final

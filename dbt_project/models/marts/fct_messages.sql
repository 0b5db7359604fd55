{#- Strongest outcome first: it names a message's delivery status whatever else was reported. -#}
{%- set delivery_precedence = ['complained', 'bounced', 'rejected', 'failed', 'delivered', 'deferred'] -%}

with

messages as (

    select * from {{ ref('int_message_ledger_latest') }}

),

email_events as (

    select * from {{ ref('fct_email_events') }}

),

event_rollup as (

    select
        message_key,
        min(
            case event_type
                {%- for event_type in delivery_precedence %}
                when '{{ event_type }}' then {{ loop.index }}
                {%- endfor %}
            end
        ) as delivery_precedence,
        max(case when event_type = 'bounced' and bounce_class = 'hard' then 1 else 0 end) as has_hard_bounce,
        max(case when event_type = 'bounced' and bounce_class = 'soft' then 1 else 0 end) as has_soft_bounce,
        {{ dbt.bool_or("event_type = 'delivered'") }} as is_delivered,
        {{ dbt.bool_or("event_type = 'bounced'") }} as is_bounced,
        {{ dbt.bool_or("event_type = 'complained'") }} as is_complained,
        {{ dbt.bool_or("event_type = 'opened'") }} as is_opened,
        {{ dbt.bool_or("event_type = 'clicked'") }} as is_clicked,
        {{ dbt.bool_or("event_type = 'unsubscribed'") }} as is_unsubscribed

    from email_events
    where message_key is not null
    group by message_key

),

joined as (

    select
        messages.*,
        case event_rollup.delivery_precedence
            {%- for event_type in delivery_precedence %}
            when {{ loop.index }} then '{{ event_type }}'
            {%- endfor %}
        end as delivery_status,
        case
            when event_rollup.has_hard_bounce = 1 then 'hard'
            when event_rollup.has_soft_bounce = 1 then 'soft'
        end as bounce_class,
        coalesce(event_rollup.is_delivered, false) as is_delivered,
        coalesce(event_rollup.is_bounced, false) as is_bounced,
        coalesce(event_rollup.is_complained, false) as is_complained,
        coalesce(event_rollup.is_opened, false) as is_opened,
        coalesce(event_rollup.is_clicked, false) as is_clicked,
        coalesce(event_rollup.is_unsubscribed, false) as is_unsubscribed

    from messages
    left join event_rollup
        on messages.message_key = event_rollup.message_key

),

final as (

    select
        message_key,
        workspace,
        stream,
        campaign,
        send_window,
        recipient,
        identity,
        sending_domain,
        provider,
        provider_account,
        route,
        provider_message_id,
        first_recorded_at,
        last_recorded_at,
        accepted_at,
        ledger_status,
        ledger_reason,
        eligible_at,
        attempts,
        delivery_status,
        bounce_class,
        is_delivered,
        is_bounced,
        is_complained,
        is_opened,
        is_clicked,
        is_unsubscribed,
        coalesce(delivery_status, ledger_status) as status

    from joined

)

select * from final

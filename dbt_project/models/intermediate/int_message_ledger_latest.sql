with

ledger as (

    select * from {{ ref('stg_mailers__send_ledger') }}

),

ranked as (

    select
        *,
        row_number() over (
            partition by message_key
            order by {{ ledger_recency_order() }}
        ) as recency_rank,
        -- routing of the latest attempt, even when a later row (a skip on retry) carries none
        row_number() over (
            partition by message_key
            order by
                case when provider_account is null then 1 else 0 end,
                {{ ledger_recency_order() }}
        ) as routing_rank,
        row_number() over (
            partition by message_key
            order by
                case when provider_message_id is null then 1 else 0 end,
                {{ ledger_recency_order() }}
        ) as provider_message_rank

    from ledger

),

messages as (

    select
        message_key,
        max(case when recency_rank = 1 then ledger_id end) as ledger_id,
        max(case when recency_rank = 1 then workspace end) as workspace,
        max(case when recency_rank = 1 then stream end) as stream,
        max(case when recency_rank = 1 then campaign end) as campaign,
        max(case when recency_rank = 1 then send_window end) as send_window,
        max(case when recency_rank = 1 then recipient end) as recipient,
        max(case when routing_rank = 1 then identity end) as identity,
        max(case when routing_rank = 1 then sending_domain end) as sending_domain,
        max(case when routing_rank = 1 then provider end) as provider,
        max(case when routing_rank = 1 then provider_account end) as provider_account,
        max(case when routing_rank = 1 then route end) as route,
        max(case when provider_message_rank = 1 then provider_message_id end) as provider_message_id,
        min(recorded_at) as first_recorded_at,
        max(recorded_at) as last_recorded_at,
        min(case when status = 'accepted' then recorded_at end) as accepted_at,
        max(case when recency_rank = 1 then status end) as ledger_status,
        max(case when recency_rank = 1 then reason end) as ledger_reason,
        max(case when recency_rank = 1 then eligible_at end) as eligible_at,
        count(case when status = 'dispatching' then 1 end) as attempts

    from ranked
    group by message_key

)

select * from messages

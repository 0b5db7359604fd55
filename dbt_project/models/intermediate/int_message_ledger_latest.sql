with

ledger as (

    select * from {{ ref('stg_mailers__send_ledger') }}

),

sequenced as (

    select
        *,
        -- breaks ties between rows recorded in the same instant: a dispatch precedes its
        -- outcome, and a settled outcome supersedes a retryable or an ambiguous one
        case status
            when 'dispatching' then 1
            when 'render_failed' then 2
            when 'not_sent' then 2
            when 'unknown' then 3
            else 4
        end as status_rank

    from ledger

),

ranked as (

    select
        *,
        row_number() over (
            partition by message_key
            order by recorded_at desc, status_rank desc, ledger_id desc
        ) as recency_rank,
        -- routing of the latest attempt, even when a later row (a skip on retry) carries none
        row_number() over (
            partition by message_key
            order by
                case when provider_account is null then 1 else 0 end,
                recorded_at desc,
                status_rank desc,
                ledger_id desc
        ) as routing_rank,
        row_number() over (
            partition by message_key
            order by
                case when provider_message_id is null then 1 else 0 end,
                recorded_at desc,
                status_rank desc,
                ledger_id desc
        ) as provider_message_rank

    from sequenced

),

messages as (

    select
        message_key,
        max(case when recency_rank = 1 then workspace end) as workspace,
        max(case when recency_rank = 1 then stream end) as stream,
        max(case when recency_rank = 1 then campaign end) as campaign,
        max(case when recency_rank = 1 then send_window end) as send_window,
        max(case when recency_rank = 1 then recipient end) as recipient,
        max(case when routing_rank = 1 then identity end) as identity,
        max(case when routing_rank = 1 then sending_domain end) as sending_domain,
        max(case when routing_rank = 1 then provider end) as provider,
        max(case when routing_rank = 1 then provider_account end) as provider_account,
        max(case when provider_message_rank = 1 then provider_message_id end) as provider_message_id,
        min(recorded_at) as first_recorded_at,
        max(recorded_at) as last_recorded_at,
        max(case when recency_rank = 1 then status end) as ledger_status,
        max(case when recency_rank = 1 then reason end) as ledger_reason,
        count(case when status = 'dispatching' then 1 end) as attempts

    from ranked
    group by message_key

)

select * from messages

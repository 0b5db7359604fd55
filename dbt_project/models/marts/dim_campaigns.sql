with

messages as (

    select * from {{ ref('fct_messages') }}

),

campaigns as (

    select
        workspace,
        campaign,
        -- a campaign sends on one stream; streams > 1 tells of a config that moved it
        max(stream) as stream,
        count(distinct stream) as streams,
        count(distinct send_window) as send_windows,
        min(send_window) as first_send_window,
        max(send_window) as last_send_window,
        min(first_recorded_at) as first_recorded_at,
        max(last_recorded_at) as last_recorded_at,
        min(accepted_at) as first_accepted_at,
        max(accepted_at) as last_accepted_at,
        count(*) as messages,
        count(case when ledger_status = 'accepted' then 1 end) as accepted

    from messages
    group by
        workspace,
        campaign

),

final as (

    select
        {{ surrogate_key(['workspace', 'campaign']) }} as campaign_key,
        workspace,
        campaign,
        stream,
        streams,
        send_windows,
        first_send_window,
        last_send_window,
        first_recorded_at,
        last_recorded_at,
        first_accepted_at,
        last_accepted_at,
        messages,
        accepted

    from campaigns

)

select * from final

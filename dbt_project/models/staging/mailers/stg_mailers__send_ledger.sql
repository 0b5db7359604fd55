with

source as (

    select * from {{ source('mailers', 'send_ledger') }}

),

renamed as (

    select
        ledger_id,
        message_key,
        status,
        reason,
        workspace,
        stream,
        campaign,
        send_window,
        recipient,
        identity,
        sending_domain,
        provider,
        provider_account,
        provider_message_id,
        batch_id,
        run_id,
        recorded_at,
        route,
        eligible_at

    from source

)

select * from renamed

with

source as (

    select * from {{ source('crm', 'contacts') }}

),

renamed as (

    select
        contact_id,
        brand,
        -- kept verbatim: the send step normalizes and validates addresses and counts the bad ones
        email,
        first_name,
        last_name,
        plan,
        country,
        marketing_opt_in,
        signed_up_at,
        last_active_at

    from source

)

select * from renamed

with

contacts as (

    select * from {{ ref('stg_crm__contacts') }}

),

audience as (

    select
        email,
        first_name,
        last_name,
        plan,
        contact_id

    from contacts
    where
        brand = 'globex'
        and marketing_opt_in

)

select * from audience

with

contacts as (

    select * from {{ ref('stg_crm__contacts') }}

),

-- activity is measured against the latest activity on record, not today, so the demo is repeatable
activity_horizon as (

    select max(last_active_at) as max_last_active_at
    from contacts

),

audience as (

    select
        contacts.email,
        contacts.first_name,
        contacts.plan,
        contacts.country,
        contacts.contact_id

    from contacts
    cross join activity_horizon
    where
        contacts.brand = 'acme'
        and contacts.marketing_opt_in
        and contacts.plan in ('pro', 'trial')
        and contacts.last_active_at >= {{ dbt.dateadd('day', -90, 'activity_horizon.max_last_active_at') }}

)

select * from audience

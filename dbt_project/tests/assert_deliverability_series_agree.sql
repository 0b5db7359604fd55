{#- Campaigns on which the deliverability series disagree: the send cohorts must count each
    message of fct_messages exactly once, the providers' acceptances the activity series
    counts (fct_deliverability_daily.sent) must be the cohorts' accepted, and dim_campaigns
    must tally the same. -#}
{{ config(meta={'owner': 'deliverability'}) }}

with

cohorts as (

    select
        workspace,
        campaign,
        sum(messages) as messages,
        sum(accepted) as accepted,
        sum(delivered) as delivered

    from {{ ref('fct_campaign_deliverability_daily') }}
    group by workspace, campaign

),

messages as (

    select
        workspace,
        campaign,
        count(*) as messages,
        count(case when ledger_status = 'accepted' then 1 end) as accepted,
        count(
            case when is_delivered and (ledger_status = 'accepted' or (ledger_status = 'unknown' and delivery_status is not null)) then 1 end
        ) as delivered

    from {{ ref('fct_messages') }}
    group by workspace, campaign

),

activity as (

    select
        workspace,
        campaign,
        sum(sent) as sent

    from {{ ref('fct_deliverability_daily') }}
    where campaign is not null
    group by workspace, campaign

),

campaigns as (

    select * from {{ ref('dim_campaigns') }}

)

select
    coalesce(messages.workspace, cohorts.workspace) as workspace,
    coalesce(messages.campaign, cohorts.campaign) as campaign,
    cohorts.messages as cohort_messages,
    messages.messages,
    cohorts.accepted as cohort_accepted,
    messages.accepted,
    activity.sent as activity_sent,
    campaigns.accepted as campaign_accepted

from messages
full outer join cohorts
    on cohorts.workspace = messages.workspace and cohorts.campaign = messages.campaign
left join activity
    on activity.workspace = messages.workspace and activity.campaign = messages.campaign
left join campaigns
    on campaigns.workspace = messages.workspace and campaigns.campaign = messages.campaign
where cohorts.messages is null
    or messages.messages is null
    or cohorts.messages != messages.messages
    or cohorts.accepted != messages.accepted
    or cohorts.delivered != messages.delivered
    or coalesce(activity.sent, 0) != cohorts.accepted
    or campaigns.messages != cohorts.messages
    or campaigns.accepted != cohorts.accepted

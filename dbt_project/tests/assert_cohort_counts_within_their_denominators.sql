{#- Rows of fct_campaign_deliverability_daily whose counts are not nested as documented:
    the ledger-status counts partition the messages, and every outcome counts a subset of
    its denominator's messages. -#}
{{ config(meta={'owner': 'deliverability'}) }}

select *
from {{ ref('fct_campaign_deliverability_daily') }}
where not (
    messages = skipped + render_failed + held + dispatching + not_sent + rejected + unknown + accepted
    and accepted <= sent and sent <= accepted + unknown
    and delivered <= sent and delivered <= accepted + unknown
    and bounced <= sent and hard_bounced <= bounced and soft_bounced = bounced - hard_bounced
    and complained <= sent and opened <= sent and clicked <= sent and unsubscribed <= sent
    and delivered_complained <= delivered and delivered_complained <= complained
    and delivered_opened <= delivered and delivered_opened <= opened
    and delivered_clicked <= delivered and delivered_clicked <= clicked
    and delivered_unsubscribed <= delivered and delivered_unsubscribed <= unsubscribed
)

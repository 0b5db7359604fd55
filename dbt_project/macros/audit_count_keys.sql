{#- Keys of audit_log.counts, for every action; a key a record lacks counts as 0. -#}
{% macro audit_count_keys() -%}
    {{ return([
        'segment_rows',
        'duplicates',
        'already_settled',
        'skipped_missing_address',
        'skipped_invalid_address',
        'skipped_suppressed',
        'render_failed',
        'accepted',
        'rejected',
        'not_sent',
        'unknown',
        'reconciled_unknown',
        'files',
        'events_parsed',
        'events_new',
        'events_duplicate',
        'suppressions_added',
        'events_polled',
        'poll_errors',
    ]) }}
{%- endmacro %}

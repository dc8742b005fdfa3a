{# One row per key: the grain of every mart. (dbt_utils is not installable offline, so the two generic tests live here.) #}
{% test unique_combination(model, columns) %}
    select {{ columns | join(', ') }}, count(*) as n_rows
    from {{ model }}
    group by {{ columns | join(', ') }}
    having count(*) > 1
{% endtest %}

{# One row per key: the grain of every mart. (dbt_utils is not installable offline, so the two generic tests live here.) #}
{% test unique_combination(model, columns) %}
    {%- set key = columns | map('string') | map('trim') | list -%}
    {%- set quoted = [] -%}
    {%- for column in key %}{% do quoted.append(adapter.quote(column)) %}{% endfor -%}
    select {{ quoted | join(', ') }}, count(*) as n_rows
    from {{ model }}
    group by {{ quoted | join(', ') }}
    having count(*) > 1
{% endtest %}

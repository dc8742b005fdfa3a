{# Building blocks for the recursive indicators (EMA, Wilder smoothing) in indicators_daily's recursive CTE.
   Every series is numbered rn = 1, 2, ... in time order; `s` is the current bar, `p` the previous bar's state. #}

{# The mean of `column` over the n bars ending at bar `at_rn` (TA-Lib's seed), on that bar only. #}
{% macro seed_mean(column, n, at_rn) -%}
    case when rn = {{ at_rn }} then avg({{ column }}) over (
        partition by series_id order by rn rows between {{ n - 1 }} preceding and current row) end
{%- endmacro %}

{# EMA step as TA-Lib writes it, ((x - prev) * k) + prev with k = 2 / (n + 1), so results match it to the last bits. #}
{% macro ema_step(state, x, n, start_rn) -%}
    case when s.rn < {{ start_rn }} then null
         when s.rn = {{ start_rn }} then s.{{ state }}_seed
         else (({{ x }} - p.{{ state }}) * (2.0 / ({{ n }} + 1))) + p.{{ state }} end
{%- endmacro %}

{# Wilder smoothing as TA-Lib writes it: (prev * (n - 1) + x) / n. #}
{% macro wilder_step(state, x, n, start_rn) -%}
    case when s.rn < {{ start_rn }} then null
         when s.rn = {{ start_rn }} then s.{{ state }}_seed
         else (p.{{ state }} * ({{ n }} - 1) + {{ x }}) / {{ n }} end
{%- endmacro %}

{% macro require_period(name, minimum=1) %}
    {%- if var(name) is not number or var(name) < minimum -%}
        {{ exceptions.raise_compiler_error("dbt var " ~ name ~ " must be an integer >= " ~ minimum ~ ", got " ~ var(name)) }}
    {%- endif -%}
{% endmacro %}

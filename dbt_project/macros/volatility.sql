{# The five range/close estimators of architecture.md, shared by volatility_daily (GROUP BY a day's 1-minute bars) and
   volatility_rolling (a window over daily bars). Bars come from volatility_bar_terms(); `over` is '' for a GROUP BY or
   an OVER (...) clause for a window, `n` the number of bars the estimate uses. `order` (GROUP BY only, e.g.
   ' order by ts') makes each aggregate add its bars in one fixed order: floating-point sums depend on the order, and a
   lake's scan order depends on how its data files were written (4 concurrent backfill runs vs one serial run differed in
   the last bit; tests/test_concurrency_backfill.py). #}

{% macro volatility_bar_terms(open='open', high='high', low='low', close='close', prev_close='prev_close') %}
        ln({{ close }} / {{ prev_close }}) as r_close_close,
        ln({{ open }} / {{ prev_close }}) as r_overnight,
        ln({{ close }} / {{ open }}) as r_open_close,
        pow(ln({{ high }} / {{ low }}), 2) as hl_sq,
        ln({{ high }} / {{ close }}) * ln({{ high }} / {{ open }})
            + ln({{ low }} / {{ close }}) * ln({{ low }} / {{ open }}) as rs_term
{%- endmacro %}

{# sigma from a variance; null (not an error) if bad OHLC made it negative, so a not_null test reports the day. #}
{% macro volatility_sigma(variance, scale) -%}
    case when ({{ variance }}) >= 0 then sqrt(({{ variance }}) * {{ scale }}) end
{%- endmacro %}

{% macro volatility_estimates(n, scale, over='', order='') %}
        {{ volatility_sigma('var_samp(r_close_close' ~ order ~ ') ' ~ over, scale) }} as close_to_close,
        {{ volatility_sigma('sum(hl_sq' ~ order ~ ') ' ~ over ~ ' / (4 * ' ~ n ~ ' * ln(2))', scale) }} as parkinson,
        {{ volatility_sigma('avg(0.5 * hl_sq - (2 * ln(2) - 1) * pow(r_open_close, 2)' ~ order ~ ') ' ~ over, scale) }} as garman_klass,
        {{ volatility_sigma('avg(rs_term' ~ order ~ ') ' ~ over, scale) }} as rogers_satchell,
        {{ volatility_sigma(
            'var_samp(r_overnight' ~ order ~ ') ' ~ over
            ~ ' + ' ~ yang_zhang_k(n) ~ ' * var_samp(r_open_close' ~ order ~ ') ' ~ over
            ~ ' + (1 - ' ~ yang_zhang_k(n) ~ ') * avg(rs_term' ~ order ~ ') ' ~ over, scale) }} as yang_zhang
{%- endmacro %}

{# k = 0.34 / (1.34 + (N+1)/(N-1)); null below two bars, where Yang-Zhang's sample variances are undefined anyway. #}
{% macro yang_zhang_k(n) -%}
    (case when {{ n }} >= 2 then 0.34 / (1.34 + ({{ n }} + 1.0) / ({{ n }} - 1.0)) end)
{%- endmacro %}

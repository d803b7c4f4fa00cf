"""result -> Vega-Lite chart rendered to SVG."""

"""``mv4d demo``: the main job end to end — synthetic drive -> ``mv4d infer`` with the shipped
weights -> evaluation against ground truth and baselines -> a report folder (PNG panels, PLY,
Markdown/HTML/JSON metrics, the bags). Real nuScenes data joins in when it is available.
"""

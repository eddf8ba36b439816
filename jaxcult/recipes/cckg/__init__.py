"""Cultural commonsense knowledge graphs ("LLMs as Cultural Archives", EACL 2026, arXiv
2601.17971): the graph (`graph`: edge cleaning, node merging, maximal paths, renderings) and
the teacher replies' parsing with JSON repair (`replies`). These are the building blocks of the
`jaxcult cckg` recipe; its stages (generate, expand, paths, evaluate) are not built yet, so no
command is registered.
"""

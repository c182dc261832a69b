"""Portuguese Wikipedia's namespaces, aliases and magic words (the subset ingest needs).

From ptwiki's own site configuration (namespace names, their aliases and the English canonical
names, the redirect keywords, the language-link prefixes). The dump's <siteinfo> is the
authority for which namespace a page is in; these tables serve to recognise link prefixes
inside wikitext (files, categories, language links).
"""

from __future__ import annotations

import re

# id -> names (local, aliases, English canonical), compared case-insensitively.
NAMESPACES: dict[int, tuple[str, ...]] = {
    -2: ("Multimédia", "Media"),
    -1: ("Especial", "Special"),
    1: ("Discussão", "Talk"),
    2: ("Usuário(a)", "Usuária", "Usuário", "Utilizador", "Utilizador(a)", "Utilizadora", "User"),
    3: ("Usuário(a) Discussão", "Usuária Discussão", "Usuário Discussão", "Utilizador Discussão",
        "Utilizador(a) Discussão", "Utilizadora Discussão", "User talk"),
    4: ("Wikipédia", "WP", "Wikipedia", "Project"),
    5: ("Wikipédia Discussão", "Wikipedia Discussão", "Wikipedia talk", "Project talk"),
    6: ("Ficheiro", "Arquivo", "Imagem", "Image", "File"),
    7: ("Ficheiro Discussão", "Arquivo Discussão", "Imagem Discussão", "Image talk", "File talk"),
    8: ("MediaWiki",),
    9: ("MediaWiki Discussão", "MediaWiki talk"),
    10: ("Predefinição", "Template"),
    11: ("Predefinição Discussão", "Template talk"),
    12: ("Ajuda", "Help"),
    13: ("Ajuda Discussão", "Help talk"),
    14: ("Categoria", "Category"),
    15: ("Categoria Discussão", "Category talk"),
    100: ("Portal",),
    101: ("Portal Discussão", "Discussão Portal"),
    102: ("Anexo", "Appendix"),
    103: ("Anexo Discussão", "Appendix talk"),
    104: ("Livro", "Book"),
    105: ("Livro Discussão", "Book talk"),
    710: ("TimedText",),
    711: ("TimedText talk",),
    828: ("Módulo", "Module"),
    829: ("Módulo Discussão", "Module talk"),
    2600: ("Tópico", "Topic"),
}

FILE_NS = 6
CATEGORY_NS = 14

# Language codes of interlanguage links ([[en:Brasília]]): dropped from the text.
LANGUAGE_PREFIXES = frozenset((
    "aa ab ace ady af als alt am ami an ang anp ar arc ary arz as ast atj av avk awa ay az azb ba "
    "ban bar bat-smg bbc bcl be be-tarask be-x-old bew bg bh bi bjn blk bm bn bo bpy br bs btm "
    "bug bxr ca cbk-zam cdo ce ceb ch cho chr chy ckb co cr crh cs csb cu cv cy da dag de dga din "
    "diq dsb dtp dty dv dz ee egl el eml en eo es et eu ext fa fat ff fi fiu-vro fj fo fon fr frp "
    "frr fur fy ga gag gan gcr gd gl glk gn gom gor got gpe gsw gu guc gur guw gv ha hak haw he "
    "hi hif ho hr hsb ht hu hy hyw hz ia id ie ig igl ii ik ilo inh io is it iu ja jam jbo jv ka "
    "kaa kab kbd kbp kcg kg ki kj kk kl km kn ko koi kr krc ks ksh ku kus kv kw ky la lad lb lbe "
    "lez lfn lg li lij lld lmo ln lo lrc lt ltg lv lzh mad mai map-bms mdf mg mh mhr mi min mk ml "
    "mn mni mnw mo mr mrj ms mt mus mwl my myv mzn na nah nan nap nb nds nds-nl ne new ng nia nl "
    "nn no nov nqo nrm nso nv ny oc olo om or os pa pag pam pap pcd pcm pdc pfl pi pih pl pms pnb "
    "pnt ps pt pwn qu rm rmy rn ro roa-rup roa-tara ru rue rup rw sa sah sat sc scn sco sd se sg "
    "sgs sh shi shn shy si simple sk skr sl sm smn sn so sq sr srn ss st stq su sv sw szl szy ta "
    "tay tcy te tet tg th ti tk tl tly tn to tpi tr trv ts tt tum tw ty tyv udm ug uk ur uz ve "
    "vec vep vi vls vo vro wa war wo wuu xal xh xmf yi yo yue za zea zgh zh zh-classical zh-cn "
    "zh-min-nan zh-tw zh-yue zu "
).split())

DISAMBIGUATION_TEMPLATES = frozenset(
    name.lower() for name in (
        "Desambiguação", "Desambig", "Disambig", "Disambiguation", "Dab", "Dabpage",
        "Desambiguacao", "Hndis", "Geodis", "Desambiguação-antropónimo", "Desambiguação-topónimo",
    )
)

_PREFIX_TO_NS = {name.casefold(): ns for ns, names in NAMESPACES.items() for name in names}

_REDIRECT_RE = re.compile(
    r"^\s*#\s*(?:REDIRECIONAMENTO|REDIRECT)\s*:?\s*\[\[([^\]|#]+)(?:#[^\]|]*)?(?:\|[^\]]*)?\]\]",
    re.IGNORECASE,
)


def namespace_of_prefix(prefix: str) -> int | None:
    """The namespace id a link prefix names (``"Imagem"`` -> 6), or None."""
    return _PREFIX_TO_NS.get(prefix.strip().replace("_", " ").casefold())


def split_title(title: str) -> tuple[int, str]:
    """(namespace, title without prefix) of a page title as written in a link or a dump."""
    if ":" in title:
        prefix, rest = title.split(":", 1)
        ns = namespace_of_prefix(prefix)
        if ns is not None:
            return ns, rest.strip()
    return 0, title.strip()


def redirect_target(wikitext: str) -> str | None:
    """The target of a redirect page's text (``#REDIRECIONAMENTO [[Alvo]]``), else None."""
    if not wikitext or "#" not in wikitext[:64]:
        return None
    m = _REDIRECT_RE.match(wikitext)
    return normalize_title(m.group(1)) if m else None


def normalize_title(title: str) -> str:
    """MediaWiki title form: underscores as spaces, single spaces, first letter upper-case."""
    title = " ".join(title.replace("_", " ").split())
    return title[:1].upper() + title[1:] if title else title

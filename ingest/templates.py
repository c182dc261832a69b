"""Inline templates rendered to the text a reader sees (the rest are dropped).

Dropping every template, as most extractors do, turns "{{lang|de|Berlin}}" into "()" and
"no {{séc|XVIII}}" into "no ,". The templates below are common in ptwiki's running text and
carry words a reader needs, so they are rendered the way the wiki shows them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

MONTHS = ("janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto",
          "setembro", "outubro", "novembro", "dezembro")
_MONTH_BY_NAME = {m: i for i, m in enumerate(MONTHS, start=1)}

UNITS = {
    "km2": "km²", "m2": "m²", "ha": "ha", "km": "km", "m": "m", "cm": "cm", "mm": "mm",
    "mi": "mi", "ft": "ft", "kg": "kg", "t": "t", "l": "L", "m3": "m³", "km3": "km³",
    "m3/s": "m³/s", "c": "°C", "°c": "°C", "f": "°F", "km/h": "km/h", "mi2": "mi²", "sqmi": "mi²",
    "hab/km2": "hab./km²",
}

Params = tuple[list[str], dict[str, str]]

# Templates whose first positional parameter is the visible text.
_FIRST_ARG = {
    "nowrap", "nobr", "small", "smaller", "big", "sc", "versalete", "nobold", "noitalic",
    "unicode", "ipa", "ipa2", "afi",
    "nowrap begin", "texto pequeno", "centro", "center", "em", "strong", "ênfase", "sem negrito",
    "abbr", "abreviatura", "sigla", "tooltip", "nota oculta", "math", "fórmula", "mvar",
    "versaletes", "smallcaps",
}
# Templates that name a language and then give the text: {{lang|en|text}}.
_LANG_TEXT = {"lang", "llang", "língua", "lingua", "idioma", "transl", "transliteração"}
_CENTURY = {"séc", "sec", "séc.", "sec.", "século", "seculo", "séc xx", "sécs"}
_CONVERT = {"converter", "convert", "conv", "cvt"}
_DATE_DMY = {"dni", "dnibr", "dtlink", "dtlink2", "dtnasc", "dma", "data", "dat", "dtlink3",
             "fdni", "dtm", "dti"}
_DATE_YMD = {"data de nascimento", "data de nascimento e idade", "birth date",
             "birth date and age", "data de morte", "death date", "data de morte e idade",
             "death date and age", "dni-ymd", "start date", "data de início", "data inicial"}
_LITERAL = {"!": "|", "=": "=", "!!": "||", "·": " · ", "•": " • ", "-": "", "clear": "",
            "nbsp": " ", "spaces": " ", "nnbsp": " ", "ndash": "–", "mdash": "—", "'": "'"}


def format_number(raw: str) -> str:
    """Number as ptwiki prints it: a space between thousands, a decimal comma."""
    raw = raw.strip().replace(" ", "")
    m = re.fullmatch(r"(-?)(\d+)(?:[.,](\d+))?", raw)
    if not m:
        return raw
    sign, whole, frac = m.groups()
    groups = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    out = sign + " ".join(groups)
    return f"{out},{frac}" if frac else out


def format_date(day: str, month: str, year: str) -> str:
    day, month, year = day.strip(), month.strip(), year.strip()
    if month.isdigit() and 1 <= int(month) <= 12:
        month = MONTHS[int(month) - 1]
    elif month.lower() in _MONTH_BY_NAME:
        month = month.lower()
    parts = []
    if day and month:
        parts.append(f"{int(day) if day.isdigit() else day} de {month}")
    elif month:
        parts.append(month)
    if year:
        parts.append(year)
    return " de ".join(parts)


def _positional(params: Params) -> list[str]:
    return [p.strip() for p in params[0]]


def _render_convert(params: Params) -> str:
    pos = _positional(params)
    if not pos:
        return ""
    value = format_number(pos[0]) if re.fullmatch(r"-?[\d.,]+", pos[0]) else pos[0]
    unit_index = 1
    # {{converter|10|-|20|km}}: ranges
    if len(pos) >= 4 and pos[1] in {"-", "–", "a", "to", "e", "and"}:
        value = f"{value} {pos[1] if pos[1] not in {'-', '–'} else 'a'} {format_number(pos[2])}"
        unit_index = 3
    unit = pos[unit_index] if len(pos) > unit_index else ""
    return f"{value} {UNITS.get(unit.lower(), unit)}".strip()


def _render_century(params: Params) -> str:
    pos = _positional(params)
    return f"século {pos[0]}" if pos and pos[0] else "século"


def _render_dmy(params: Params) -> str:
    pos = _positional(params) + ["", "", ""]
    if not any(pos[:3]):
        return ""
    return format_date(pos[0], pos[1], pos[2])


def _render_ymd(params: Params) -> str:
    pos = [p for p in _positional(params) if p.lower() not in {"df=yes", "mf=yes"}] + ["", "", ""]
    year, month, day = pos[0], pos[1], pos[2]
    return format_date(day, month, year) if year else ""


def _render_lang(params: Params) -> str:
    pos = _positional(params)
    return pos[1] if len(pos) >= 2 else ""


def _render_link_template(params: Params) -> str:
    # {{Link|en|Original title|texto}} / {{Ill|Title|en|Original}}: the local text.
    pos = _positional(params)
    if len(pos) >= 3 and len(pos[0]) <= 3:
        return pos[2] or pos[1]
    if len(pos) >= 2 and len(pos[0]) <= 3:
        return pos[1]
    return pos[0] if pos else ""


def _render_first(params: Params) -> str:
    pos = _positional(params)
    if pos:
        return pos[0]
    named = params[1]
    return (named.get("texto") or named.get("text") or named.get("1") or "").strip()


def _render_quote(params: Params) -> str:
    # {{Citação|texto|autor|fonte}}, {{Quote|text=...|sign=...}}: the quoted text only.
    named = params[1]
    for key in ("texto", "text", "quote", "citação", "citacao", "1"):
        if named.get(key, "").strip():
            return named[key].strip()
    pos = _positional(params)
    return pos[0] if pos else ""


_COORD_HEMISPHERES = {"N": "N", "S": "S", "E": "L", "L": "L", "W": "O", "O": "O"}


def _render_coord(params: Params) -> str:
    """{{Coord|39|39|N|7|40|W}} -> 39°39′N 7°40′O (ptwiki writes O and L for west and east);
    {{Coord|-23.55|-46.63}} -> 23,55°S 46,63°O. Shown only at the top of the page
    (display=title) it is not part of the text: dropped."""
    display = params[1].get("display", "").replace(" ", "").lower()
    if display and "inline" not in display and "linha" not in display:
        return ""
    pos = [p for p in _positional(params) if p and ":" not in p]
    marks = ("°", "′", "″")
    halves: list[str] = []
    numbers: list[str] = []
    for p in pos:
        hemisphere = _COORD_HEMISPHERES.get(p.upper())
        if hemisphere and numbers:
            halves.append("".join(f"{n.replace('.', ',')}{m}" for n, m in zip(numbers, marks, strict=False)) + hemisphere)
            numbers = []
        elif re.fullmatch(r"-?\d+(?:[.,]\d+)?", p) and len(numbers) < 3:
            numbers.append(p)
    if not halves and len(numbers) == 2:  # decimal degrees, signed
        for n, (plus, minus) in zip(numbers, (("N", "S"), ("L", "O")), strict=True):
            halves.append(f"{n.lstrip('-').replace('.', ',')}°{minus if n.startswith('-') else plus}")
    return " ".join(halves[:2]) if len(halves) >= 2 else ""


# ISO codes as {{bandeira|BRA}} takes them: only the flag is shown, never a name.
_COUNTRY_CODE = re.compile(r"[A-Z]{2,3}")


def _render_flag_name(params: Params) -> str:
    # {{flagcountry|Brasil}}, {{flag|Portugal}}: flag + name; a bare code shows no name.
    pos = _positional(params)
    name = params[1].get("nome", "").strip() or (pos[1] if len(pos) >= 2 else "")
    if not name and pos and not _COUNTRY_CODE.fullmatch(pos[0]):
        name = pos[0]
    return name


_LIST_ITEM = re.compile(r"^[ \t]*[*#]+[ \t]*", re.MULTILINE)


def _render_list(params: Params) -> str:
    # {{ubl|A|B}}, {{hlist|A|B}}, {{plainlist|\n* A\n* B}}: the items, comma separated.
    items: list[str] = []
    for p in _positional(params):
        items += [line.strip() for line in _LIST_ITEM.sub("", p).split("\n") if line.strip()]
    return ", ".join(items)


def _render_sort(params: Params) -> str:
    # {{sort|chave|texto}} shows the text (the key when there is none); {{sortname|A|B}}: "A B".
    pos = _positional(params)
    if len(pos) >= 2 and pos[1]:
        return pos[1]
    return pos[0] if pos else ""


def _render_sortname(params: Params) -> str:
    return " ".join(p for p in _positional(params)[:2] if p)


RENDERERS: dict[str, Callable[[Params], str]] = {}
for _name in _FIRST_ARG:
    RENDERERS[_name] = _render_first
for _name in _LANG_TEXT:
    RENDERERS[_name] = _render_lang
for _name in _CENTURY:
    RENDERERS[_name] = _render_century
for _name in _CONVERT:
    RENDERERS[_name] = _render_convert
for _name in _DATE_DMY:
    RENDERERS[_name] = _render_dmy
for _name in _DATE_YMD:
    RENDERERS[_name] = _render_ymd
for _name in ("citação", "citacao", "quote", "cquote", "blockquote", "citação2", "quotation",
              "citação bloco", "quote box", "caixa de citação"):
    RENDERERS[_name] = _render_quote
# ("Coor title dms" and its kin show at the page's top, not in the text: dropped.)
for _name in ("coord", "coor dms", "coor dm", "coor d", "coor", "coordenadas", "coor dec"):
    RENDERERS[_name] = _render_coord
for _name in ("flagcountry", "flag", "flagu", "bandeira país", "bandeirapaís", "país",
              "band", "bandpaís"):
    RENDERERS[_name] = _render_flag_name
for _name in ("ubl", "unbulleted list", "plainlist", "plain list", "lista simples", "hlist",
              "flatlist", "lista horizontal", "lista sem marcadores", "collapsible list"):
    RENDERERS[_name] = _render_list
for _name in ("sort", "ordenar", "sortkey", "sorttext"):
    RENDERERS[_name] = _render_sort
RENDERERS["sortname"] = _render_sortname
for _name in ("link", "ill", "interlink", "link-interwiki", "ligação interlíngua"):
    RENDERERS[_name] = _render_link_template


def render_magic(name: str, arg: str, title: str) -> str | None:
    """Parser functions and magic words written ``{{name:arg}}``; None when not one."""
    key = name.strip().lower()
    if key == "formatnum":
        return format_number(arg)
    if key in {"lc", "lcfirst"}:
        return arg.lower() if key == "lc" else arg[:1].lower() + arg[1:]
    if key in {"uc", "ucfirst"}:
        return arg.upper() if key == "uc" else arg[:1].upper() + arg[1:]
    if key.startswith("#") or key in {"defaultsort", "ordenacaopadrao", "ordenaçãopadrão",
                                      "ordempadrao", "ordempadrão", "displaytitle", "exibetitulo",
                                      "exibetítulo", "defaultsortkey", "subst", "safesubst",
                                      "msgnw", "int", "fullurl", "localurl", "urlencode"}:
        return ""
    return None


def is_rendered(key: str) -> bool:
    """Whether :func:`render` gives text for this (normalised) template name."""
    return (key in RENDERERS or key in _LITERAL or key.startswith("lang-")
            or key in {"pagename", "nomedapágina", "nomedapagina", "pagenamee"})


def render(name: str, params: Params, title: str = "") -> str | None:
    """The visible text of an inline template, or None when it is not rendered (dropped)."""
    key = name.strip().replace("_", " ").lower()
    if key in _LITERAL:
        return _LITERAL[key]
    if key in {"pagename", "nomedapágina", "nomedapagina", "pagenamee"}:
        return title
    if key.startswith("lang-") and len(key) <= 12:
        pos = _positional(params)
        return pos[0] if pos else ""
    fn = RENDERERS.get(key)
    return fn(params) if fn else None

"""LaTeX tables (booktabs) for reports/ and `compare --format latex`."""
from __future__ import annotations


def escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("$", r"\$"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("−", "$-$"), ("Δ", r"$\Delta$"), ("γ", r"$\gamma$"), ("—", "---"), ("–", "--"), ("±", r"$\pm$"),
                 ("×", r"$\times$"), ("†", r"\dag{}")):
        s = s.replace(a, b)
    return s


def latex_table(columns: list[str], rows: list[list[str]], caption: str, label: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); every cell is escaped here."""
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "r" * (len(columns) - 1) + "}",
             r"\toprule", " & ".join(escape(c) for c in columns) + r" \\", r"\midrule"]
    lines += [" & ".join(escape(c) for c in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{escape(caption)}}}", rf"\label{{{label}}}",
              r"\end{table}", ""]
    return "\n".join(lines)

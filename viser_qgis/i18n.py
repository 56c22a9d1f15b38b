"""Translation of the plugin's user-visible strings (QGIS's convention: Qt's ``translate``).

English is the only language shipped. A translation is a Qt ``.qm`` file in ``i18n/`` named
``viser_cr_<language>.qm`` (e.g. ``viser_cr_de.qm``), made from ``i18n/viser_cr.pro`` with
``pylupdate5`` and ``lrelease``; the plugin installs it for QGIS's user interface language.
"""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtCore import QCoreApplication, QLocale, QSettings, QTranslator

CONTEXT = "ViserCr"
I18N_DIR = Path(__file__).resolve().parent.parent / "i18n"


def tr(text: str) -> str:
    """``text`` in QGIS's interface language, when a translation provides it (else unchanged)."""
    return QCoreApplication.translate(CONTEXT, text)


def user_language() -> str:
    """QGIS's interface language ('de' for 'de_DE'); the system's when QGIS does not override it."""
    settings = QSettings()
    locale = ""
    if str(settings.value("locale/overrideFlag", False)).lower() == "true":
        locale = str(settings.value("locale/userLocale", "") or "")
    return (locale or QLocale().name() or "en")[:2]


def install_translator(language: str | None = None) -> QTranslator | None:
    """Install ``i18n/viser_cr_<language>.qm`` when there is one; returns it (for ``remove_translator``)."""
    path = I18N_DIR / f"viser_cr_{language or user_language()}.qm"
    if not path.is_file():
        return None
    translator = QTranslator()
    if not translator.load(str(path)):
        return None
    QCoreApplication.installTranslator(translator)
    return translator


def remove_translator(translator: QTranslator | None) -> None:
    if translator is not None:
        QCoreApplication.removeTranslator(translator)

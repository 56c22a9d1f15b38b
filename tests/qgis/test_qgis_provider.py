"""The provider, its four algorithms and their parameters; the plugin's load / unload."""

from __future__ import annotations

import pytest
from qgis.core import QgsApplication, QgsProcessingParameterDefinition
from qgis_testlib import RecordingIface

ALGORITHMS = {
    "viser:removeclouds": {
        "INPUT", "SENSOR", "BANDS", "MODEL", "MODEL_FILE", "KEEP_CLEAR", "CLOUD_MASK", "TILE_SIZE", "OVERLAP",
        "DEVICE", "TTA", "OUTPUT", "SCORE", "UNCERTAINTY",
    },
    "viser:removecloudsstack": {
        "INPUTS", "REFERENCE", "RESAMPLING", "MODEL", "MODEL_FILE", "TILE_SIZE", "OVERLAP", "DEVICE", "OUTPUT",
        "SCORE", "UNCERTAINTY",
    },
    "viser:cloudscore": {"INPUT", "SENSOR", "BANDS", "MODEL", "MODEL_FILE", "DEVICE", "OUTPUT"},
    "viser:evaluate": {"PREDICTION", "REFERENCE", "OUTPUT_HTML"},
}
ADVANCED = {"TILE_SIZE", "OVERLAP", "DEVICE", "TTA"}


def test_provider_registered(provider):
    registry = QgsApplication.processingRegistry()
    assert registry.providerById("viser") is provider
    assert provider.name() == "VISER-CR cloud removal"
    assert not provider.icon().isNull()
    ids = {alg.id() for alg in provider.algorithms()}
    assert ids == set(ALGORITHMS)


@pytest.mark.parametrize("algorithm_id", sorted(ALGORITHMS))
def test_algorithm_parameters_and_help(provider, algorithm_id):
    alg = QgsApplication.processingRegistry().algorithmById(algorithm_id)
    assert alg is not None
    names = {p.name() for p in alg.parameterDefinitions()}
    assert ALGORITHMS[algorithm_id] <= names, ALGORITHMS[algorithm_id] - names
    for name in ADVANCED & names:
        assert alg.parameterDefinition(name).flags() & QgsProcessingParameterDefinition.FlagAdvanced, name
    assert alg.shortHelpString() and len(alg.shortHelpString()) > 200
    assert alg.shortDescription()
    assert alg.group() and alg.groupId()
    assert not alg.icon().isNull()
    # Outputs are declared, so the modeler can chain them.
    outputs = {o.name() for o in alg.outputDefinitions()}
    if algorithm_id == "viser:evaluate":
        assert {"PSNR", "SSIM", "MAE", "LPIPS", "OUTPUT_HTML"} <= outputs
    else:
        assert "OUTPUT" in outputs


def test_removeclouds_parameter_types(provider):
    alg = QgsApplication.processingRegistry().algorithmById("viser:removeclouds")
    types = {p.name(): p.type() for p in alg.parameterDefinitions()}
    assert types["INPUT"] == "raster"
    assert types["BANDS"] == "band"
    assert types["OUTPUT"] == "rasterDestination"
    assert types["SCORE"] == "rasterDestination" and types["UNCERTAINTY"] == "rasterDestination"
    for optional in ("SCORE", "UNCERTAINTY", "BANDS", "MODEL_FILE", "CLOUD_MASK", "TILE_SIZE", "OVERLAP"):
        assert alg.parameterDefinition(optional).flags() & QgsProcessingParameterDefinition.FlagOptional, optional
    sensor = alg.parameterDefinition("SENSOR")
    assert sensor.usesStaticStrings() and sensor.defaultValue() == "auto"
    assert alg.parameterDefinition("MODEL").options()[0] == "auto"
    stack = QgsApplication.processingRegistry().algorithmById("viser:removecloudsstack")
    assert stack.parameterDefinition("INPUTS").type() == "multilayer"
    assert stack.parameterDefinition("REFERENCE").flags() & QgsProcessingParameterDefinition.FlagOptional


def test_plugin_gui_load_unload(viser_plugin, qgis_iface):
    """initGui + dock + unload leaves no provider, action or dock behind; twice (plugin reload)."""
    from viser_cr import classFactory

    registry = QgsApplication.processingRegistry()
    viser_plugin.unload()  # the session's qgis_process-style instance steps aside
    try:
        before = {p.id() for p in registry.providers()}
        assert "viser" not in before
        for _ in range(2):
            plugin = classFactory(RecordingIface(qgis_iface))  # pytest-qgis's iface has no Raster menu
            plugin.initGui()
            assert registry.providerById("viser") is plugin.provider
            assert plugin.action is not None
            plugin.action.trigger()  # opens the dock
            assert plugin.dock is not None and not plugin.dock.isHidden()
            plugin.action.trigger()  # closes it
            assert plugin.dock.isHidden()
            plugin.unload()
            assert plugin.dock is None and plugin.action is None and plugin.provider is None
            assert {p.id() for p in registry.providers()} == before
    finally:
        viser_plugin.initProcessing()
    assert registry.providerById("viser") is viser_plugin.provider


def test_provider_load_imports_no_torch(tmp_path):
    """Loading the plugin (qgis_process does it on every call) must not import torch or the engine."""
    import subprocess
    import sys

    code = (
        "import sys; sys.path.append('/usr/share/qgis/python/plugins')\n"
        "from qgis.core import QgsApplication\n"
        "app = QgsApplication([], False); app.initQgis()\n"
        "from viser_cr import classFactory\n"
        "plugin = classFactory(None); plugin.initProcessing()\n"
        "assert len(plugin.provider.algorithms()) == 4\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('viser_cr.core.pipeline'))\n"
        "print('IMPORTED', bad)\n"
        "plugin.unload()\n"
    )
    env = dict(__import__("os").environ, QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "IMPORTED []" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("algorithm_id", sorted(ALGORITHMS))
def test_toolbox_dialog_builds_every_widget(provider, qgis_iface, algorithm_id, monkeypatch):
    """The Processing GUI dialog (what the Toolbox opens) builds a widget for every parameter."""
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.gui import QgsBrowserGuiModel

    browser = QgsBrowserGuiModel()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: browser, raising=False)  # not in pytest-qgis's iface

    alg = QgsApplication.processingRegistry().createAlgorithmById(algorithm_id)
    dialog = AlgorithmDialog(alg, parent=qgis_iface.mainWindow())
    panel = dialog.mainWidget()
    wrappers = panel.wrappers
    visible = {p.name() for p in alg.parameterDefinitions() if not p.isDestination()}
    assert visible <= set(wrappers), visible - set(wrappers)
    assert all(wrapper is not None for wrapper in wrappers.values())
    if "CREATION_OPTIONS" in wrappers:  # GDAL's creation-options editor (profiles, COG-friendly options)
        assert type(wrappers["CREATION_OPTIONS"]).__name__ == "RasterOptionsWidgetWrapper"
    dialog.deleteLater()

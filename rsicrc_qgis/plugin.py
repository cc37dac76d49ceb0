"""The plugin object QGIS gets from classFactory: toolbar, menu, docks, map tool, Processing provider."""
from pathlib import Path

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from . import messages, settings
from .caption.dialog import CaptionDialog
from .caption.task import CaptionTask
from .click.map_tool import ClickController
from .click.panel import ClickPanel
from .processing.provider import RsicrcProvider
from .qgis_enums import CRITICAL, INFO
from .search.dock import SearchDock
from .setup.dialog import SetupDialog
from .setup.settings_dialog import SettingsDialog
from .worker import serve_client
from .worker.environment import check_environment

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"
MENU = "&RSICRC"


class RsicrcPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.actions = []
        self.toolbar = None
        self.dock = None
        self.click_panel = None
        self.click = None
        self.tasks = []
        self._setup_dialog = None
        self._env_checked = False

    # --- QGIS hooks ---------------------------------------------------------------------
    def initProcessing(self):  # noqa: N802 - QGIS hook
        if self.provider is None:
            provider = RsicrcProvider()
            # The registry deletes a provider it refuses (id already taken, e.g. by a second
            # instance of the plugin); keep no dangling reference to it.
            if QgsApplication.processingRegistry().addProvider(provider):
                self.provider = provider

    def initGui(self):  # noqa: N802 - QGIS hook
        self.initProcessing()
        main = self.iface.mainWindow()
        self.caption_action = QAction(QIcon(str(ICONS / "rsicrc.svg")), "Caption changes…", main)
        self.caption_action.setObjectName("rsicrcCaptionChanges")
        self.caption_action.setToolTip("RSICRC: caption the changes between two rasters")
        self.caption_action.triggered.connect(self.open_caption_dialog)
        self.search_action = QAction(QIcon(str(ICONS / "search.svg")), "Search changes by text", main)
        self.search_action.setObjectName("rsicrcSearchDock")
        self.search_action.setCheckable(True)
        self.click_action = QAction(QIcon(str(ICONS / "what_changed.svg")), "What changed here?", main)
        self.click_action.setObjectName("rsicrcWhatChangedHere")
        self.click_action.setToolTip("RSICRC: click the map to caption the changes in the window around the point")
        self.click_action.setCheckable(True)
        self.click_action.triggered.connect(self.toggle_click_tool)
        self.settings_action = QAction("Settings…", main)
        self.settings_action.triggered.connect(self.open_settings)
        self.setup_action = QAction("Set up environment…", main)
        self.setup_action.triggered.connect(self.open_setup)
        self.actions = [self.caption_action, self.search_action, self.click_action, self.settings_action,
                        self.setup_action]
        for action in self.actions:  # under Plugins, and under Raster (metadata.txt's category)
            self.iface.addPluginToMenu(MENU, action)
            self.iface.addPluginToRasterMenu(MENU, action)
        self.toolbar = self.iface.addToolBar("RSICRC")
        self.toolbar.setObjectName("RsicrcToolbar")
        self.toolbar.addAction(self.caption_action)
        self.toolbar.addAction(self.search_action)
        self.toolbar.addAction(self.click_action)

        self.dock = SearchDock(self.iface, main)
        self.dock.setToggleVisibilityAction(self.search_action)
        self.dock.environmentProblem.connect(self.report_environment_problem)
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.hide()

        self.click_panel = ClickPanel(main)
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.click_panel)
        self.click_panel.hide()
        self.click = ClickController(self.iface.mapCanvas(), self.click_panel, parent=main)
        self.click.tool.setAction(self.click_action)  # the action is unchecked when another tool takes over
        self.click.environmentProblem.connect(self.report_environment_problem)

    def unload(self):
        for task in list(self.tasks):
            task.cancel()
        if self.dock is not None:
            self.dock.shutdown()
        if self.click is not None:
            self.click.shutdown()
        serve_client.close_all()
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            self.iface.removePluginRasterMenu(MENU, action)
        if self.toolbar is not None:
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.click_panel is not None:
            self.iface.removeDockWidget(self.click_panel)
            self.click_panel.deleteLater()
            self.click_panel = None
            self.click.deleteLater()
            self.click = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # --- caption --------------------------------------------------------------------------
    def open_caption_dialog(self):
        dialog = CaptionDialog(self.iface.mainWindow(), canvas=self.iface.mapCanvas())
        dialog.runRequested.connect(self.start_caption)
        # The map tool's panel offers the pair last captioned.
        dialog.runRequested.connect(lambda *_: settings.save_last_pair(
            dialog.before_combo.currentLayer().id(), dialog.after_combo.currentLayer().id()))
        self.check_environment_once()
        dialog.show()
        self.caption_dialog = dialog
        return dialog

    def start_caption(self, args, output, name, env=None):
        task = CaptionTask(args, output, name, env=env)
        task.finishedWithResult.connect(self.caption_finished)
        self.tasks.append(task)
        task.taskCompleted.connect(lambda: self._forget(task))
        task.taskTerminated.connect(lambda: self._forget(task))
        QgsApplication.taskManager().addTask(task)
        messages.push(self.iface, f"Captioning started: {output} (progress in the task manager)",
                      INFO, 4)
        return task

    def _forget(self, task):
        if task in self.tasks:
            self.tasks.remove(task)

    def caption_finished(self, layer, message, level, is_environment):
        if is_environment:
            self.report_environment_problem(message)
            return
        messages.push(self.iface, message, level, 10 if level != CRITICAL else 0)
        if layer is not None:
            self.iface.showAttributeTable(layer)
            if self.dock is not None:
                self.dock.set_layer(layer)

    # --- what changed here? ---------------------------------------------------------------
    def toggle_click_tool(self, checked=True):
        canvas = self.iface.mapCanvas()
        if not checked:
            if canvas.mapTool() is self.click.tool:
                canvas.unsetMapTool(self.click.tool)
            return
        if self.click_panel.isHidden():  # reopened: offer the pair chosen last meanwhile
            self.click_panel.load_pair()
        self.click_panel.show()
        self.click_panel.raise_()
        canvas.setMapTool(self.click.tool)
        self.check_environment_once()

    # --- environment --------------------------------------------------------------------
    def report_environment_problem(self, message):
        messages.push_environment_problem(self.iface, message, self.open_setup)

    def check_environment_once(self):
        """On first use, test the interpreter in the background; a problem goes to the message bar."""
        if self._env_checked:
            return
        self._env_checked = True

        def done(exception, status=None):
            if status is not None and not status.ok:
                self.report_environment_problem(status.message)

        self._env_task = QgsTask.fromFunction("RSICRC: checking the Python environment",
                                              lambda _t: check_environment(), on_finished=done)
        QgsApplication.taskManager().addTask(self._env_task)

    def open_setup(self):
        if self._setup_dialog is not None and self._setup_dialog.isVisible():
            self._setup_dialog.raise_()
            return self._setup_dialog
        self._setup_dialog = SetupDialog(self.iface.mainWindow())
        self._setup_dialog.show()
        self._setup_dialog.start()
        self._env_checked = False
        return self._setup_dialog

    def open_settings(self):
        dialog = SettingsDialog(self.iface.mainWindow(), on_setup=self.open_setup)
        if dialog.exec():
            serve_client.close_all()  # a new interpreter/model/device takes effect next search
            self._env_checked = False

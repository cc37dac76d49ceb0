"""Message-bar messages; an environment problem always comes with a "Set up environment" button."""
from qgis.PyQt.QtWidgets import QPushButton

from .qgis_enums import INFO, WARNING


TITLE = "RSICRC"


def push(iface, text, level=INFO, duration=8):
    if iface is not None and iface.messageBar() is not None:
        iface.messageBar().pushMessage(TITLE, text, level, duration)


def push_environment_problem(iface, text, on_setup):
    """Say what is wrong with the Python environment and offer to set one up."""
    bar = iface.messageBar() if iface is not None else None
    if bar is None:
        return None
    widget = bar.createMessage(TITLE, text)
    button = QPushButton("Set up environment", widget)
    button.clicked.connect(on_setup)
    widget.layout().addWidget(button)
    bar.pushWidget(widget, WARNING, 0)
    return widget

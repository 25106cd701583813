// sd-webui-speedkit: grey out attention backends that cannot run here, with the reason as a tooltip.
// The reasons come from the data-speedkit-unavailable attribute of the note under the dropdown.
(function () {
    function unavailableFor(tab) {
        const note = gradioApp().querySelector(`#script_${tab}_speedkit_unavailable .speedkit_unavailable`);
        if (!note) return {};
        try {
            return JSON.parse(note.dataset.speedkitUnavailable || "{}");
        } catch (e) {
            return {};
        }
    }

    function markOptions(tab) {
        const dropdown = gradioApp().querySelector(`#script_${tab}_speedkit_attention`);
        if (!dropdown) return;
        const reasons = unavailableFor(tab);
        dropdown.querySelectorAll("ul.options li").forEach(function (item) {
            const name = (item.dataset.value || item.textContent || "").trim();
            if (name in reasons) {
                item.classList.add("speedkit_unavailable_option");
                item.title = reasons[name];
            }
        });
    }

    onAfterUiUpdate(function () {
        markOptions("txt2img");
        markOptions("img2img");
    });
})();

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

    function markOptions(dropdown, reasons) {
        dropdown.querySelectorAll("ul.options li").forEach(function (item) {
            const name = (item.dataset.value || item.textContent || "").trim();
            if (name in reasons && !item.classList.contains("speedkit_unavailable_option")) {
                item.classList.add("speedkit_unavailable_option");
                item.title = reasons[name];
            }
        });
    }

    function watch(tab) {
        const dropdown = gradioApp().querySelector(`#script_${tab}_speedkit_attention`);
        if (!dropdown) return;
        const reasons = unavailableFor(tab);
        // The option list is created when the dropdown opens: mark it as soon as it appears.
        new MutationObserver(function () {
            markOptions(dropdown, reasons);
        }).observe(dropdown, {childList: true, subtree: true});
    }

    onUiLoaded(function () {
        watch("txt2img");
        watch("img2img");
    });
})();

// The Speedkit tab's buttons: register a task id so the WebUI's progress bar follows the benchmark.
function speedkit_bench_submit() {
    var id = randomId();
    requestProgress(id, gradioApp().getElementById("speedkit_bench_progress"), null, function () {});
    var args = Array.from(arguments);
    args[0] = id;
    return args;
}

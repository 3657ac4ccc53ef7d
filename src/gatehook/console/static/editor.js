// The console's script editor: Monaco over the source text area of an action's publish form.
// Every change is written back to the text area, so the form posts exactly as it does
// without JavaScript. The contract's declarations (gatehook.Input, gatehook.Result and the
// sandbox's globals, generated from its models) are loaded as an extra library, so a wrong
// field is marked while typing; a publish error's "(line N, column M)" is marked at its place,
// and a publish of a script the editor marks errors in asks first (the publish itself only
// transpiles: a type error would show at run time, if at all).
(function () {
  'use strict';
  var area = document.querySelector('textarea[data-editor]');
  if (!area) return;
  var vs = area.getAttribute('data-editor');
  var language = area.form.querySelector('select[name=language]');
  var loader = document.createElement('script');
  loader.src = vs + '/loader.js';
  loader.onload = function () {
    window.require.config({ paths: { vs: vs } });
    window.require(['vs/editor/editor.main'], function () {
      fetch(area.getAttribute('data-types'))
        .then(function (r) { return r.text(); })
        .then(start, function () { start(''); });
    });
  };
  document.head.appendChild(loader);

  function languageOf() {
    return language && language.value === 'js' ? 'javascript' : 'typescript';
  }

  var seq = 0;
  function modelFor(value) {
    var lang = languageOf();
    seq += 1;
    // the extension tells the TypeScript worker how to read the file
    var uri = monaco.Uri.parse('file:///action-' + seq + (lang === 'typescript' ? '.ts' : '.js'));
    return monaco.editor.createModel(value, lang, uri);
  }

  function start(types) {
    var ts = monaco.typescript;
    var options = {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ESNext,
      lib: ['es2022'],
      strict: true,
      noEmit: true,
      allowNonTsExtensions: true,
    };
    ts.typescriptDefaults.setCompilerOptions(options);
    ts.javascriptDefaults.setCompilerOptions(Object.assign({ allowJs: true }, options));
    if (types) {
      ts.typescriptDefaults.addExtraLib(types, 'file:///gatehook.d.ts');
      ts.javascriptDefaults.addExtraLib(types, 'file:///gatehook.d.ts');
    }
    var box = document.createElement('div');
    box.className = 'monaco-box';
    box.setAttribute('data-testid', 'editor');
    var label = area.closest('label') || area;
    label.after(box);
    area.hidden = true;
    var editor = monaco.editor.create(box, {
      model: modelFor(area.value),
      theme: 'vs-dark',
      automaticLayout: true,
      minimap: { enabled: false },
      fontSize: 13,
      tabSize: 2,
      scrollBeyondLastLine: false,
    });
    function follow(model) {
      model.onDidChangeContent(function () { area.value = model.getValue(); });
    }
    follow(editor.getModel());
    if (language) {
      language.addEventListener('change', function () {
        var old = editor.getModel();
        var model = modelFor(old.getValue());
        editor.setModel(model);
        follow(model);
        old.dispose();
      });
    }
    markPublishError(editor);
    confirmPublishWithErrors(editor);
    box.setAttribute('data-ready', 'true');
    window.gatehookEditor = editor; // for the console's browser tests
  }

  function confirmPublishWithErrors(editor) {
    area.form.addEventListener('submit', function (event) {
      var by = event.submitter;
      if (!by || by.getAttribute('data-testid') !== 'publish-button') return;
      var marked = monaco.editor.getModelMarkers({ resource: editor.getModel().uri })
        .filter(function (m) {
          return m.severity === monaco.MarkerSeverity.Error && m.owner !== 'publish';
        });
      if (!marked.length) return;
      var first = marked[0];
      var say = 'The editor marks ' + marked.length + (marked.length === 1 ? ' error' : ' errors') +
        ' in this script (line ' + first.startLineNumber + ': ' + first.message + ').' +
        ' Publish anyway?';
      if (window.confirm(say)) return;
      event.preventDefault();
      editor.revealLineInCenter(first.startLineNumber);
      editor.setPosition({ lineNumber: first.startLineNumber, column: first.startColumn });
      editor.focus();
    });
  }

  function markPublishError(editor) {
    var error = area.form.querySelector('[data-error-for=source]');
    var where = error && /\(line (\d+), column (\d+)\)/.exec(error.textContent || '');
    if (!where) return;
    var line = Number(where[1]);
    var column = Number(where[2]);
    monaco.editor.setModelMarkers(editor.getModel(), 'publish', [{
      severity: monaco.MarkerSeverity.Error,
      message: error.textContent,
      startLineNumber: line,
      startColumn: column,
      endLineNumber: line,
      endColumn: column + 1,
    }]);
    editor.revealLineInCenter(line);
    editor.setPosition({ lineNumber: line, column: column });
  }
})();

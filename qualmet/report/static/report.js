/* qualmet report: the explorer (sort, filter, select, export), tabs, lightbox, nav highlight.
   Plain JS, no libraries, nothing fetched: the data is the JSON blob inlined in the page. */
(function () {
  'use strict';

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
    });
  }
  function fmt(v) {
    if (v === null || v === undefined || (typeof v === 'number' && isNaN(v))) return '–';
    if (typeof v !== 'number') return String(v);
    if (Number.isInteger(v)) return String(v);
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return String(+v.toPrecision(4));
  }
  function download(name, text, type) {
    var blob = new Blob([text], { type: type });
    var url = URL.createObjectURL(blob);
    var a = document.createElement('a');
    a.href = url; a.download = name; a.style.display = 'none';
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 2000);
  }
  function csvCell(v) {
    if (v === null || v === undefined) return '';
    var s = String(v);
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  /* ---- explorer ---------------------------------------------------------------------------- */
  function Explorer(root, data) {
    this.root = root;
    this.d = data;
    this.cols = data.columns;
    this.rows = data.rows;
    this.ci = {};
    for (var i = 0; i < this.cols.length; i++) this.ci[this.cols[i].key] = i;
    this.idc = this.ci[data.idKey];
    this.selected = new Set();
    this.sortKey = null; this.sortDir = 1;
    this.page = 0; this.pageSize = 50;
    this.order = this.rows.map(function (_, i) { return i; });
    this.view = this.order.slice();
    this.build();
    this.apply();
  }

  Explorer.prototype.metricCols = function () {
    return this.cols.filter(function (c) { return c.type === 'metric'; });
  };

  Explorer.prototype.build = function () {
    var self = this, r = this.root, mcols = this.metricCols();
    var opts = mcols.map(function (c) { return '<option value="' + esc(c.key) + '">' + esc(c.key) + '</option>'; }).join('');
    r.innerHTML =
      '<div class="toolbar">' +
      '<label>Filter</label><select class="ex-metric" aria-label="metric to filter on">' + opts + '</select>' +
      '<select class="ex-op" aria-label="comparison"><option value="ge">≥</option><option value="le">≤</option></select>' +
      '<input class="ex-thr" type="number" step="any" placeholder="threshold" aria-label="threshold">' +
      '<button class="ex-suggest" title="set the threshold to the 1.5x IQR fence on the suspicious side">fence</button>' +
      '<button class="ex-clear">clear</button>' +
      '<select class="ex-kind" aria-label="kind" hidden></select>' +
      '<input class="ex-search" type="search" placeholder="search id, file, class…" aria-label="search">' +
      '<span class="sep"></span>' +
      '<span class="ex-count"></span>' +
      '</div>' +
      '<div class="toolbar">' +
      '<span class="ex-selcount small muted">0 selected</span>' +
      '<button class="ex-selall">select all matching</button>' +
      '<button class="ex-selnone">clear selection</button>' +
      '<button class="ex-json primary" disabled>export selected ids (JSON)</button>' +
      '<button class="ex-csv primary" disabled>export selected ids (CSV)</button>' +
      '</div>' +
      '<div class="extable-wrap"><table class="extable"><thead></thead><tbody></tbody></table></div>' +
      '<div class="pager"><button class="ex-prev">‹ prev</button><span class="ex-page"></span>' +
      '<button class="ex-next">next ›</button><label>rows per page <select class="ex-size">' +
      '<option>25</option><option selected>50</option><option>100</option><option>250</option></select></label></div>';
    this.thead = $('thead', r); this.tbody = $('tbody', r);
    var head = '<tr>';
    this.cols.forEach(function (c) {
      if (c.hidden) return;  // kept for search and export, not shown
      if (c.type === 'thumb') { head += '<th class="nosort"></th>'; return; }
      if (c.type === 'check') { head += '<th class="nosort"><input type="checkbox" class="ex-page-all" title="select this page"></th>'; return; }
      var label = esc(c.label || c.key).replace(/_/g, '_<wbr>');
      var w = c.type === 'metric' ? '<span class="w">' + (c.worse === 'high' ? 'high = suspicious' : 'low = suspicious') + '</span>' : '';
      head += '<th data-key="' + esc(c.key) + '" class="' + (c.type === 'metric' || c.type === 'int' || c.type === 'id' ? 'num' : '') +
        '" title="' + esc(c.title || ('sort by ' + c.key)) + '">' + label + '<span class="arrow"></span>' + w + '</th>';
    });
    this.thead.innerHTML = head + '</tr>';
    $all('th[data-key]', this.thead).forEach(function (th) {
      th.tabIndex = 0;
      th.addEventListener('click', function () { self.sortBy(th.getAttribute('data-key')); });
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); self.sortBy(th.getAttribute('data-key')); }
      });
    });
    if (!mcols.length) {  // nothing to filter on (e.g. no frame-level metric was computed)
      ['.ex-metric', '.ex-op', '.ex-thr', '.ex-suggest'].forEach(function (s) { $(s, r).hidden = true; });
      $('.toolbar label', r).hidden = true;
    }
    var metricSel = $('.ex-metric', r), op = $('.ex-op', r), thr = $('.ex-thr', r);
    function defaultOp() {
      var c = self.cols[self.ci[metricSel.value]];
      if (c) op.value = c.worse === 'high' ? 'ge' : 'le';
    }
    defaultOp();
    metricSel.addEventListener('change', function () { defaultOp(); self.apply(); });
    op.addEventListener('change', function () { self.apply(); });
    thr.addEventListener('input', function () { self.apply(); });
    $('.ex-search', r).addEventListener('input', function () { self.apply(); });
    var kc = this.ci.kind, kindSel = $('.ex-kind', r);
    if (kc !== undefined && this.cols[kc].type === 'kind') {  // a column of categories: pick one to see only it
      var kinds = [];
      this.rows.forEach(function (row) { if (row[kc] !== null && kinds.indexOf(row[kc]) < 0) kinds.push(row[kc]); });
      kindSel.innerHTML = '<option value="">every kind</option>' + kinds.map(function (k) {
        return '<option value="' + esc(k) + '">' + esc(k) + '</option>'; }).join('');
      kindSel.hidden = false;
      kindSel.addEventListener('change', function () { self.apply(); });
    }
    $('.ex-clear', r).addEventListener('click', function () {
      thr.value = ''; $('.ex-search', r).value = ''; $('.ex-kind', r).value = ''; self.apply(); });
    $('.ex-suggest', r).addEventListener('click', function () {
      var c = self.cols[self.ci[metricSel.value]];
      if (!c) return;
      var f = c.worse === 'high' ? c.hi : c.lo;
      if (f === null || f === undefined) return;
      op.value = c.worse === 'high' ? 'ge' : 'le';
      thr.value = String(+f.toPrecision(6));
      self.apply();
    });
    $('.ex-prev', r).addEventListener('click', function () { if (self.page > 0) { self.page--; self.render(); } });
    $('.ex-next', r).addEventListener('click', function () {
      if ((self.page + 1) * self.pageSize < self.view.length) { self.page++; self.render(); }
    });
    $('.ex-size', r).addEventListener('change', function (e) { self.pageSize = +e.target.value; self.page = 0; self.render(); });
    $('.ex-selall', r).addEventListener('click', function () {
      self.view.forEach(function (i) { self.selected.add(self.rows[i][self.idc]); }); self.render();
    });
    $('.ex-selnone', r).addEventListener('click', function () { self.selected.clear(); self.render(); });
    $('.ex-json', r).addEventListener('click', function () { self.exportJSON(); });
    $('.ex-csv', r).addEventListener('click', function () { self.exportCSV(); });
    this.tbody.addEventListener('change', function (e) {
      var t = e.target;
      if (!t.classList.contains('ex-sel')) return;
      var id = +t.getAttribute('data-id');
      if (t.checked) self.selected.add(id); else self.selected.delete(id);
      t.closest('tr').classList.toggle('sel', t.checked);
      self.updateSelection();
    });
    $('.ex-page-all', this.thead).addEventListener('change', function (e) {
      var on = e.target.checked;
      self.pageRows().forEach(function (i) {
        var id = self.rows[i][self.idc];
        if (on) self.selected.add(id); else self.selected.delete(id);
      });
      self.render();
    });
  };

  Explorer.prototype.sortBy = function (key) {
    var c = this.cols[this.ci[key]];
    if (this.sortKey === key) this.sortDir = -this.sortDir;
    else { this.sortKey = key; this.sortDir = (c.type === 'metric' && c.worse === 'high') ? -1 : 1; }
    var ci = this.ci[key], idc = this.idc, dir = this.sortDir, rows = this.rows;
    this.order.sort(function (a, b) {
      var va = rows[a][ci], vb = rows[b][ci], na = va === null, nb = vb === null;
      if (na || nb) { if (na && nb) return rows[a][idc] - rows[b][idc]; return na ? 1 : -1; }  // missing values last
      if (va < vb) return -dir;
      if (va > vb) return dir;
      return rows[a][idc] - rows[b][idc];
    });
    $all('th[data-key]', this.thead).forEach(function (th) {
      var on = th.getAttribute('data-key') === key;
      th.classList.toggle('sorted', on);
      th.setAttribute('aria-sort', on ? (dir > 0 ? 'ascending' : 'descending') : 'none');
      $('.arrow', th).textContent = on ? (dir > 0 ? ' ▲' : ' ▼') : '';
    });
    this.apply();
  };

  Explorer.prototype.apply = function () {
    var r = this.root, rows = this.rows;
    var key = $('.ex-metric', r).value, op = $('.ex-op', r).value, raw = $('.ex-thr', r).value.trim();
    var thr = raw === '' ? null : Number(raw), ci = this.ci[key];
    var q = $('.ex-search', r).value.trim().toLowerCase();
    var kind = $('.ex-kind', r).value, kc = this.ci.kind;
    var textCols = [];
    this.cols.forEach(function (c, i) { if (c.type === 'id' || c.type === 'text' || c.type === 'kind') textCols.push(i); });
    this.view = this.order.filter(function (i) {
      var row = rows[i];
      if (kind && row[kc] !== kind) return false;
      if (thr !== null && !isNaN(thr) && ci !== undefined) {
        var v = row[ci];
        if (v === null) return false;
        if (op === 'ge' ? !(v >= thr) : !(v <= thr)) return false;
      }
      if (q) {
        var hit = false;
        for (var k = 0; k < textCols.length && !hit; k++) {
          var s = row[textCols[k]];
          hit = s !== null && String(s).toLowerCase().indexOf(q) >= 0;
        }
        if (!hit) return false;
      }
      return true;
    });
    this.page = 0;
    var cnt = $('.ex-count', r);
    cnt.setAttribute('data-count', String(this.view.length));
    cnt.innerHTML = '<b>' + this.view.length + '</b> of ' + rows.length + ' ' + esc(this.d.noun);
    this.render();
  };

  Explorer.prototype.pageRows = function () {
    return this.view.slice(this.page * this.pageSize, (this.page + 1) * this.pageSize);
  };

  Explorer.prototype.render = function () {
    var self = this, cols = this.cols, d = this.d, html = '';
    this.pageRows().forEach(function (i) {
      var row = self.rows[i], id = row[self.idc], sel = self.selected.has(id);
      html += '<tr data-id="' + id + '"' + (sel ? ' class="sel"' : '') + '>';
      for (var k = 0; k < cols.length; k++) {
        var c = cols[k], v = row[k];
        if (c.hidden) continue;
        if (c.type === 'thumb') {
          var iid = row[self.ci.image_id], full = d.frameThumbs[iid];
          var cap = esc(d.noun.replace(/s$/, '') + ' ' + id + ' · ' + (row[self.ci.file_name] || ''));
          html += '<td class="t">' + (v ? '<img loading="lazy" src="' + esc(v) + '" alt="" width="56" height="56"' +
            (full ? ' data-full="' + esc(full) + '" data-cap="' + cap + '"' : '') + '>' : '<div class="noimg">no image</div>') + '</td>';
        } else if (c.type === 'check') {
          html += '<td><input type="checkbox" class="ex-sel" data-id="' + id + '"' + (sel ? ' checked' : '') + ' aria-label="select"></td>';
        } else if (c.type === 'metric') {
          var out = v !== null && ((c.worse === 'high' && c.hi !== null && v > c.hi) || (c.worse === 'low' && c.lo !== null && v < c.lo));
          html += '<td class="num' + (out ? ' out' : '') + '" title="' + (v === null ? 'not defined' : esc(v)) + '">' + fmt(v) + '</td>';
        } else if (c.type === 'kind') {
          html += '<td><span class="badge hi">' + esc(v === null ? '–' : v) + '</span></td>';
        } else if (c.type === 'error') {
          html += '<td>' + (v ? '<span class="badge err">' + esc(v) + '</span>' : '<span class="clean">clean</span>') + '</td>';
        } else {
          html += '<td class="' + (c.type === 'id' || c.type === 'int' ? 'num' : '') + '">' + esc(v === null ? '–' : v) + '</td>';
        }
      }
      html += '</tr>';
    });
    this.tbody.innerHTML = html || '<tr><td colspan="' + cols.length + '" class="muted">nothing matches</td></tr>';
    var pages = Math.max(1, Math.ceil(this.view.length / this.pageSize));
    $('.ex-page', this.root).textContent = 'page ' + (this.page + 1) + ' of ' + pages;
    $('.ex-prev', this.root).disabled = this.page === 0;
    $('.ex-next', this.root).disabled = this.page + 1 >= pages;
    var pa = $('.ex-page-all', this.thead), pr = this.pageRows();
    pa.checked = pr.length > 0 && pr.every(function (i) { return self.selected.has(self.rows[i][self.idc]); });
    this.updateSelection();
  };

  Explorer.prototype.updateSelection = function () {
    var n = this.selected.size;
    $('.ex-selcount', this.root).textContent = n + ' selected';
    $('.ex-selcount', this.root).setAttribute('data-count', String(n));
    $('.ex-json', this.root).disabled = n === 0;
    $('.ex-csv', this.root).disabled = n === 0;
  };

  Explorer.prototype.selectedRows = function () {
    var self = this;
    return this.rows.filter(function (row) { return self.selected.has(row[self.idc]); })
      .sort(function (a, b) { return a[self.idc] - b[self.idc]; });
  };

  Explorer.prototype.exportJSON = function () {
    var self = this, rows = this.selectedRows(), out = { level: this.d.level, count: rows.length };
    out[this.d.idKey + 's'] = rows.map(function (r) { return r[self.idc]; });
    if (this.d.idKey !== 'image_id') {
      out.image_ids = Array.from(new Set(rows.map(function (r) { return r[self.ci.image_id]; }))).sort(function (a, b) { return a - b; });
    }
    if (this.d.idKey !== 'annotation_id' && this.ci.annotation_id !== undefined) {  // review issues name boxes too
      out.annotation_ids = Array.from(new Set(rows.map(function (r) { return r[self.ci.annotation_id]; })
        .filter(function (a) { return a !== null; }))).sort(function (a, b) { return a - b; });
    }
    out.items = rows.map(function (r) {
      var o = {};
      self.cols.forEach(function (c, k) { if (c.type === 'id' || c.type === 'text' || c.type === 'error' || c.type === 'kind') o[c.key] = r[k]; });
      return o;
    });
    download('qualmet_selected_' + this.d.noun + '.json', JSON.stringify(out, null, 2) + '\n', 'application/json');
  };

  Explorer.prototype.exportCSV = function () {
    var keep = [];
    this.cols.forEach(function (c, k) { if (c.type === 'id' || c.type === 'text' || c.type === 'error' || c.type === 'kind') keep.push(k); });
    var self = this, lines = [keep.map(function (k) { return csvCell(self.cols[k].key); }).join(',')];
    this.selectedRows().forEach(function (r) { lines.push(keep.map(function (k) { return csvCell(r[k]); }).join(',')); });
    download('qualmet_selected_' + this.d.noun + '.csv', lines.join('\n') + '\n', 'text/csv');
  };

  /* ---- page wiring ------------------------------------------------------------------------- */
  function init() {
    window.qualmetExplorers = {};
    $all('[data-explorer]').forEach(function (el) {
      var blob = document.getElementById(el.getAttribute('data-explorer'));
      if (!blob) return;
      window.qualmetExplorers[el.id] = new Explorer(el, JSON.parse(blob.textContent));
    });
    $all('.tabs').forEach(function (tabs) {
      $all('button[data-tab]', tabs).forEach(function (b) {
        b.addEventListener('click', function () {
          $all('button[data-tab]', tabs).forEach(function (o) {
            o.classList.toggle('active', o === b);
            document.getElementById(o.getAttribute('data-tab')).hidden = o !== b;
          });
        });
      });
    });
    var box = $('#lightbox');
    document.addEventListener('click', function (e) {
      var t = e.target.closest ? e.target.closest('[data-full]') : null;
      if (t && box) {
        $('img', box).src = t.getAttribute('data-full');
        $('figcaption', box).textContent = t.getAttribute('data-cap') || '';
        box.classList.add('open');
      } else if (box && box.classList.contains('open') && box.contains(e.target)) {
        box.classList.remove('open');
      }
    });
    document.addEventListener('keydown', function (e) { if (e.key === 'Escape' && box) box.classList.remove('open'); });
    var links = $all('.topbar nav a');
    if ('IntersectionObserver' in window && links.length) {
      var obs = new IntersectionObserver(function (entries) {
        entries.forEach(function (en) {
          if (!en.isIntersecting) return;
          links.forEach(function (a) { a.classList.toggle('active', a.getAttribute('href') === '#' + en.target.id); });
        });
      }, { rootMargin: '-60px 0px -70% 0px' });
      $all('section.report-section').forEach(function (s) { obs.observe(s); });
    }
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();

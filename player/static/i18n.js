// Every string the pages show, in Simplified Chinese (the default) and English.
//
// The language comes from `?lang=en` / `?lang=zh`, else the last choice made with the
// toggle (localStorage), else Chinese. Markup marks translatable text with
//   data-i18n="key"             → textContent
//   data-i18n-label="key"       → aria-label (and title)
//   data-i18n-placeholder="key" → placeholder

export const LANGS = ["zh", "en"];

export const STRINGS = {
  zh: {
    "app.name": "ClassCast 课堂直播",
    "lang.toggle": "English",
    "nav.home": "首页",

    "home.title": "正在直播的课堂",
    "home.intro": "选择一个课堂收看，或进入教师控制台开始上课。",
    "home.loading": "正在加载…",
    "home.empty": "现在没有正在直播的课堂。",
    "home.error": "无法加载课堂列表：{message}",
    "home.live": "直播中",
    "home.waiting": "等待老师",
    "home.since": "开始于 {time}",
    "home.viewers": "{count} 个课堂在看",
    "home.watch": "进入课堂",
    "home.teach": "教师控制台",
    "home.token.title": "需要访问令牌",
    "home.token.help": "请粘贴管理员发给您的令牌（可用 classcast token 生成）。",
    "home.token.label": "访问令牌",
    "home.token.submit": "确定",
    "home.open.title": "打开课堂",
    "home.open.room": "课堂名称",
    "home.open.watch": "收看",
    "home.open.teach": "上课",

    "teach.title": "教师控制台：{room}",
    "teach.preview.label": "本机摄像头预览",
    "teach.golive": "开始上课",
    "teach.end": "下课",
    "teach.state.idle": "准备就绪，点击“开始上课”。",
    "teach.state.camera": "正在打开摄像头和麦克风…",
    "teach.state.connecting": "正在连接服务器…",
    "teach.state.live": "直播中",
    "teach.state.reconnecting": "连接中断，正在重新连接…（{seconds} 秒后重试）",
    "teach.state.ended": "已下课",
    "teach.state.busy": "这个课堂已经有老师在直播，{seconds} 秒后重试…",
    "teach.error.camera": "无法打开摄像头或麦克风：{message}",
    "teach.error.auth": "访问令牌无效、已过期或无权在此课堂上课，请向管理员索取新的链接。（{message}）",
    "teach.error.network": "无法连接服务器，请检查网络。{seconds} 秒后自动重试…",
    "teach.error.nocamera": "没有找到摄像头或麦克风，或浏览器不允许使用它们。请接好设备、在地址栏允许访问后点击“开始上课”重试。（{message}）",
    "teach.error.other": "出错了：{message}",
    "teach.codec.label": "视频编码",
    "teach.settings": "摄像头、麦克风和视频编码",
    "teach.camera.label": "摄像头",
    "teach.mic.label": "麦克风",
    "teach.device.camera": "摄像头 {n}",
    "teach.device.mic": "麦克风 {n}",
    "teach.device.error": "无法切换设备：{message}",
    "teach.codec.auto": "自动",
    "teach.share": "共享屏幕",
    "teach.share.stop": "停止共享屏幕",
    "teach.share.label": "共享的屏幕预览",
    "teach.share.error": "无法共享屏幕：{message}",
    "teach.record": "开始录制",
    "teach.record.stop": "停止录制",
    "teach.record.on": "正在录制",
    "teach.record.off": "未录制",
    "teach.record.error": "录制出错：{message}",
    "teach.classrooms": "正在收看的课堂（{count}）",
    "teach.classrooms.empty": "还没有课堂在收看。",
    "teach.classroom.link": "延迟 {rtt} 毫秒 · 丢包 {loss}% · {kbps} kbps",
    "teach.classroom.page": "{fps} 帧/秒 · 卡顿 {freezes} 次",
    "teach.classroom.measuring": "正在测量连接质量…",
    "teach.grade.good": "良好",
    "teach.grade.fair": "一般",
    "teach.grade.poor": "较差",
    "teach.questions": "举手和提问（{count} 个待回答）",
    "teach.questions.empty": "还没有课堂举手或提问。",
    "teach.question.hand": "{classroom} 举手了",
    "teach.question.asked": "{classroom} 提问",
    "teach.question.answer": "标记为已回答",
    "teach.question.answered": "已回答",
    "teach.channel.down": "与服务器的消息通道已断开，正在重新连接…",

    "class.title": "课堂：{room}",
    "class.video.label": "课堂直播画面",
    "class.fullscreen": "全屏",
    "class.fullscreen.exit": "退出全屏",
    "class.unmute": "点击开启声音",
    "class.state.connecting": "正在进入课堂…",
    "class.state.waiting": "课程即将开始，{seconds} 秒后自动进入…",
    "class.state.live": "正在直播",
    "class.state.reconnecting": "连接中断，{seconds} 秒后重新连接…",
    "class.state.nosignal": "暂无画面，老师可能已下课或网络不稳定。",
    "class.error.auth": "访问令牌无效、已过期或不属于这个课堂，请向管理员索取新的链接。（{message}）",
    "class.error.network": "无法连接服务器，请检查网络。{seconds} 秒后自动重试…",
    "class.error.other": "出错了：{message}（{seconds} 秒后重试）",
    "class.error.fatal": "出错了：{message}",
    "class.quality": "{fps} 帧/秒 · {kbps} kbps · 丢包 {lost} · 卡顿 {freezes} 次",
    "class.quality.label": "连接质量",
    "class.screen.label": "老师共享的屏幕",
    "class.lowdata": "低流量模式",
    "class.lowdata.on": "低流量模式：开",
    "class.lowdata.help": "网络差时打开：只接收流畅画质（约 150 kbps），卡顿更少",
    "class.level.low": "网络较弱，已自动切换到流畅画质",
    "class.level.low.pinned": "低流量模式：流畅画质",
    "class.level.audio": "网络很弱，暂时只播放声音，网络好转后自动恢复画面",
    "class.hand": "举手",
    "class.hand.sent": "已举手",
    "class.ask.label": "向老师提问",
    "class.ask.placeholder": "输入问题，按回车发送",
    "class.ask.send": "发送",
    "class.questions": "我们的举手和提问",
    "class.question.hand": "举手",
    "class.question.waiting": "等待老师回答",
    "class.question.answered": "老师已回答",
    "class.channel.down": "提问暂时不可用，正在重新连接…",
    "class.ask.error": "没有发送成功：{message}",

    "nav.catalog": "课程回放",

    "catalog.title": "课程回放",
    "catalog.search.label": "搜索课程",
    "catalog.search.placeholder": "课题、老师、学校…（例如：分数）",
    "catalog.search.submit": "搜索",
    "catalog.filters": "筛选",
    "catalog.facet.subject": "学科",
    "catalog.facet.grade": "年级",
    "catalog.facet.school": "学校",
    "catalog.facet.county": "区县",
    "catalog.facet.all": "全部",
    "catalog.facet.more": "显示全部（{count}）",
    "catalog.facet.less": "收起",
    "catalog.date": "上课日期",
    "catalog.date.from": "从",
    "catalog.date.to": "到",
    "catalog.clear": "清除全部条件",
    "catalog.sort": "排序",
    "catalog.sort.relevance": "最相关",
    "catalog.sort.newest": "最新",
    "catalog.sort.oldest": "最早",
    "catalog.sort.longest": "时长最长",
    "catalog.sort.title": "按标题",
    "catalog.results": "搜索结果",
    "catalog.loading": "正在搜索…",
    "catalog.count": "共 {total} 节课",
    "catalog.count.one": "共 1 节课",
    "catalog.empty": "没有找到符合条件的课程。试试更少的关键词，或清除筛选条件。",
    "catalog.paging": "翻页",
    "catalog.page": "第 {page} / {pages} 页",
    "catalog.prev": "上一页",
    "catalog.next": "下一页",
    "catalog.duration": "时长 {duration}",
    "catalog.status.interrupted": "录制中断",
    "catalog.status.missing": "录像缺失",
    "grade.number": "{grade} 年级",

    "error.auth": "访问令牌无效或已过期，请向管理员索取新的令牌。",
    "error.forbidden": "这个访问令牌无权查看课程。",
    "error.network": "无法连接服务器，请检查网络后重试。",
    "error.server": "服务器暂时出错，请稍后重试。",
    "error.bad": "搜索条件有误。",
    "error.detail": "详情：{message}",
    "error.retry": "重试",

    "lesson.back": "返回课程列表",
    "lesson.loading": "正在加载课程…",
    "lesson.notfound": "找不到这节课。它可能已被删除，或者链接有误。",
    "lesson.missing": "这节课的录像已不在存档中，无法播放。",
    "lesson.interrupted": "录制曾中断，录像可能不完整。",
    "lesson.video.label": "课程录像：{title}",
    "lesson.speed": "播放速度",
    "lesson.download": "下载录像（MP4）",
    "lesson.details": "课程信息",
    "lesson.teacher": "授课教师",
    "lesson.school": "学校",
    "lesson.county": "区县",
    "lesson.subject": "学科",
    "lesson.grade": "年级",
    "lesson.date": "上课时间",
    "lesson.duration": "时长",
    "lesson.description": "课程简介",
    "lesson.tags": "标签",
    "lesson.questions": "课堂提问",
    "lesson.questions.empty": "这节课没有课堂举手或提问。",
    "lesson.questions.unavailable": "暂时无法读取这节课的提问。",
    "lesson.question.hand": "举手",
    "lesson.question.answered": "已回答",
    "lesson.question.open": "未回答",
    "lesson.keys.title": "键盘快捷键",
    "lesson.keys.space": "空格",
    "lesson.keys.play": "播放 / 暂停",
    "lesson.keys.back": "后退 10 秒",
    "lesson.keys.forward": "前进 10 秒",
    "lesson.keys.fullscreen": "全屏 / 退出全屏",
    "lesson.keys.mute": "静音 / 取消静音",
    "lesson.feedback.play": "播放",
    "lesson.feedback.pause": "暂停",
    "lesson.feedback.seek": "{sign}10 秒（{time}）",
    "lesson.feedback.muted": "已静音",
    "lesson.feedback.unmuted": "已取消静音",
    "lesson.feedback.speed": "播放速度 {rate}×",
    "lesson.error.media": "视频无法播放：{message}",
    "lesson.error.unsupported": "这个浏览器无法播放在线录像，请下载 MP4 观看。",

    "token.missing": "地址中缺少访问令牌（?token=…）。",
  },
  en: {
    "app.name": "ClassCast live lessons",
    "lang.toggle": "中文",
    "nav.home": "Home",

    "home.title": "Live classrooms",
    "home.intro": "Pick a classroom to watch, or open the teacher console to start a lesson.",
    "home.loading": "Loading…",
    "home.empty": "No lesson is live right now.",
    "home.error": "Could not load the rooms: {message}",
    "home.live": "Live",
    "home.waiting": "Waiting for the teacher",
    "home.since": "since {time}",
    "home.viewers": "{count} watching",
    "home.watch": "Watch",
    "home.teach": "Teacher console",
    "home.token.title": "A token is needed",
    "home.token.help": "Paste the token you were given (make one with classcast token).",
    "home.token.label": "Access token",
    "home.token.submit": "OK",
    "home.open.title": "Open a classroom",
    "home.open.room": "Room name",
    "home.open.watch": "Watch",
    "home.open.teach": "Teach",

    "teach.title": "Teacher console: {room}",
    "teach.preview.label": "Camera preview",
    "teach.golive": "Go live",
    "teach.end": "End lesson",
    "teach.state.idle": "Ready. Press “Go live”.",
    "teach.state.camera": "Opening camera and microphone…",
    "teach.state.connecting": "Connecting…",
    "teach.state.live": "Live",
    "teach.state.reconnecting": "Connection lost, reconnecting… (retry in {seconds} s)",
    "teach.state.ended": "Lesson ended",
    "teach.state.busy": "Another teacher is live in this room; retrying in {seconds} s…",
    "teach.error.camera": "Cannot open the camera or microphone: {message}",
    "teach.error.auth": "The access token is not valid, has expired or may not teach in this room; ask for a new link. ({message})",
    "teach.error.network": "Cannot reach the server; check the network. Retrying in {seconds} s…",
    "teach.error.nocamera": "No camera or microphone was found, or the browser may not use them. Connect one, allow access in the address bar, then press “Go live” again. ({message})",
    "teach.error.other": "Something went wrong: {message}",
    "teach.codec.label": "Video codec",
    "teach.settings": "Camera, microphone and video codec",
    "teach.camera.label": "Camera",
    "teach.mic.label": "Microphone",
    "teach.device.camera": "Camera {n}",
    "teach.device.mic": "Microphone {n}",
    "teach.device.error": "Cannot switch the device: {message}",
    "teach.codec.auto": "Automatic",
    "teach.share": "Share screen",
    "teach.share.stop": "Stop sharing",
    "teach.share.label": "Shared screen preview",
    "teach.share.error": "Cannot share the screen: {message}",
    "teach.record": "Start recording",
    "teach.record.stop": "Stop recording",
    "teach.record.on": "Recording",
    "teach.record.off": "Not recording",
    "teach.record.error": "Recording problem: {message}",
    "teach.classrooms": "Classrooms watching ({count})",
    "teach.classrooms.empty": "No classroom is watching yet.",
    "teach.classroom.link": "delay {rtt} ms · loss {loss}% · {kbps} kbps",
    "teach.classroom.page": "{fps} fps · {freezes} freezes",
    "teach.classroom.measuring": "Measuring the connection…",
    "teach.grade.good": "Good",
    "teach.grade.fair": "Fair",
    "teach.grade.poor": "Poor",
    "teach.questions": "Raised hands and questions ({count} open)",
    "teach.questions.empty": "No classroom has raised a hand or asked yet.",
    "teach.question.hand": "{classroom} raised a hand",
    "teach.question.asked": "{classroom} asks",
    "teach.question.answer": "Mark answered",
    "teach.question.answered": "Answered",
    "teach.channel.down": "The message channel to the server is down; reconnecting…",

    "class.title": "Classroom: {room}",
    "class.video.label": "Live lesson video",
    "class.fullscreen": "Full screen",
    "class.fullscreen.exit": "Exit full screen",
    "class.unmute": "Click to unmute",
    "class.state.connecting": "Joining the lesson…",
    "class.state.waiting": "The lesson starts soon; joining in {seconds} s…",
    "class.state.live": "Live",
    "class.state.reconnecting": "Connection lost; reconnecting in {seconds} s…",
    "class.state.nosignal": "No picture: the teacher may have ended the lesson, or the network is weak.",
    "class.error.auth": "The access token is not valid, has expired or is for another room; ask for a new link. ({message})",
    "class.error.network": "Cannot reach the server; check the network. Retrying in {seconds} s…",
    "class.error.other": "Something went wrong: {message} (retry in {seconds} s)",
    "class.error.fatal": "Something went wrong: {message}",
    "class.quality": "{fps} fps · {kbps} kbps · {lost} packets lost · {freezes} freezes",
    "class.quality.label": "Connection quality",
    "class.screen.label": "The teacher's shared screen",
    "class.lowdata": "Low data mode",
    "class.lowdata.on": "Low data mode: on",
    "class.lowdata.help": "Turn on for a poor connection: only the smooth picture (about 150 kbps), fewer freezes",
    "class.level.low": "Weak connection: switched to the smooth picture",
    "class.level.low.pinned": "Low data mode: smooth picture",
    "class.level.audio": "Very weak connection: sound only for now; the picture comes back when the connection recovers",
    "class.hand": "Raise hand",
    "class.hand.sent": "Hand raised",
    "class.ask.label": "Ask the teacher",
    "class.ask.placeholder": "Type a question, press Enter to send",
    "class.ask.send": "Send",
    "class.questions": "Our hands and questions",
    "class.question.hand": "Raised hand",
    "class.question.waiting": "Waiting for the teacher",
    "class.question.answered": "The teacher answered",
    "class.channel.down": "Questions are unavailable for now; reconnecting…",
    "class.ask.error": "Not sent: {message}",

    "nav.catalog": "Lesson archive",

    "catalog.title": "Recorded lessons",
    "catalog.search.label": "Search lessons",
    "catalog.search.placeholder": "Title, teacher, school… (e.g. fractions)",
    "catalog.search.submit": "Search",
    "catalog.filters": "Filters",
    "catalog.facet.subject": "Subject",
    "catalog.facet.grade": "Grade",
    "catalog.facet.school": "School",
    "catalog.facet.county": "County",
    "catalog.facet.all": "All",
    "catalog.facet.more": "Show all ({count})",
    "catalog.facet.less": "Show fewer",
    "catalog.date": "Lesson date",
    "catalog.date.from": "From",
    "catalog.date.to": "To",
    "catalog.clear": "Clear everything",
    "catalog.sort": "Sort by",
    "catalog.sort.relevance": "Best match",
    "catalog.sort.newest": "Newest",
    "catalog.sort.oldest": "Oldest",
    "catalog.sort.longest": "Longest",
    "catalog.sort.title": "Title",
    "catalog.results": "Results",
    "catalog.loading": "Searching…",
    "catalog.count": "{total} lessons",
    "catalog.count.one": "1 lesson",
    "catalog.empty": "No lesson matches. Try fewer words, or clear the filters.",
    "catalog.paging": "Pages",
    "catalog.page": "Page {page} of {pages}",
    "catalog.prev": "Previous",
    "catalog.next": "Next",
    "catalog.duration": "Duration {duration}",
    "catalog.status.interrupted": "Interrupted",
    "catalog.status.missing": "Missing",
    "grade.number": "Grade {grade}",

    "error.auth": "The access token is not valid or has expired; ask for a new one.",
    "error.forbidden": "This access token may not view lessons.",
    "error.network": "Cannot reach the server. Check the network and try again.",
    "error.server": "The server had a problem; try again later.",
    "error.bad": "The search is not valid.",
    "error.detail": "Details: {message}",
    "error.retry": "Try again",

    "lesson.back": "Back to lessons",
    "lesson.loading": "Loading the lesson…",
    "lesson.notfound": "This lesson was not found. It may have been deleted, or the link is wrong.",
    "lesson.missing": "The recording of this lesson is no longer in the archive.",
    "lesson.interrupted": "The recording was interrupted; the video may be incomplete.",
    "lesson.video.label": "Lesson video: {title}",
    "lesson.speed": "Speed",
    "lesson.download": "Download (MP4)",
    "lesson.details": "About this lesson",
    "lesson.teacher": "Teacher",
    "lesson.school": "School",
    "lesson.county": "County",
    "lesson.subject": "Subject",
    "lesson.grade": "Grade",
    "lesson.date": "Date",
    "lesson.duration": "Duration",
    "lesson.description": "Description",
    "lesson.tags": "Tags",
    "lesson.questions": "Questions from classrooms",
    "lesson.questions.empty": "No classroom raised a hand or asked in this lesson.",
    "lesson.questions.unavailable": "The questions of this lesson cannot be read now.",
    "lesson.question.hand": "Raised hand",
    "lesson.question.answered": "Answered",
    "lesson.question.open": "Not answered",
    "lesson.keys.title": "Keyboard shortcuts",
    "lesson.keys.space": "Space",
    "lesson.keys.play": "Play / pause",
    "lesson.keys.back": "Back 10 s",
    "lesson.keys.forward": "Forward 10 s",
    "lesson.keys.fullscreen": "Full screen on / off",
    "lesson.keys.mute": "Mute / unmute",
    "lesson.feedback.play": "Playing",
    "lesson.feedback.pause": "Paused",
    "lesson.feedback.seek": "{sign}10 s ({time})",
    "lesson.feedback.muted": "Muted",
    "lesson.feedback.unmuted": "Sound on",
    "lesson.feedback.speed": "Speed {rate}×",
    "lesson.error.media": "The video cannot play: {message}",
    "lesson.error.unsupported": "This browser cannot play recorded lessons; download the MP4 instead.",

    "token.missing": "The address has no access token (?token=…).",
  },
};

const STORAGE_KEY = "classcast.lang";

function stored() {
  try {
    return localStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

/** The page's language: ?lang=, else the stored choice, else Chinese. */
export function currentLang(search = location.search) {
  const asked = new URLSearchParams(search).get("lang");
  for (const candidate of [asked, stored()]) {
    const short = (candidate || "").toLowerCase().slice(0, 2);
    if (LANGS.includes(short)) return short;
  }
  return "zh";
}

let lang = currentLang();

export function getLang() {
  return lang;
}

/** The string `key` in the current language with `{name}` placeholders filled from `vars`. */
export function t(key, vars = {}) {
  const text = STRINGS[lang][key] ?? STRINGS.zh[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (all, name) => (name in vars ? String(vars[name]) : all));
}

/** A grade in the current language: "5" → "5 年级" / "Grade 5"; others (高一) as they are. */
export function gradeLabel(grade) {
  return /^\d+$/.test(grade) ? t("grade.number", { grade }) : grade;
}

/** Fill every data-i18n* element under `root`. */
export function apply(root = document) {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  /** @param {string} selector */
  const all = (selector) => /** @type {NodeListOf<HTMLInputElement>} */ (
    root.querySelectorAll(selector));
  for (const el of all("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of all("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
    el.title = t(el.dataset.i18nLabel);
  }
  for (const el of all("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
}

/**
 * Switch language (remembered, and kept in the address so copied links keep it), then
 * re-render: static markup via `apply`, dynamic text via `onChange`.
 */
/**
 * @param {string} next
 * @param {(lang: string) => void} [onChange]
 */
export function setLang(next, onChange = () => {}) {
  if (!LANGS.includes(next)) return;
  lang = next;
  try {
    localStorage.setItem(STORAGE_KEY, next);
  } catch {
    // private mode: the choice lasts for this page only
  }
  const url = new URL(location.href);
  url.searchParams.set("lang", next);
  history.replaceState(history.state, "", url);
  apply();
  onChange(next);
}

/**
 * Wire a toggle button to switch languages. Its text names the other language in that
 * language ("English" / "中文"), marked with `lang` so screen readers pronounce it right.
 */
/**
 * @param {HTMLElement} button
 * @param {(lang: string) => void} [onChange]
 */
export function bindToggle(button, onChange = () => {}) {
  const label = () => {
    button.lang = lang === "zh" ? "en" : "zh-CN";
  };
  label();
  button.addEventListener("click", () => setLang(lang === "zh" ? "en" : "zh", (next) => {
    label();
    onChange(next);
  }));
}
